import Hummingbird

/// The console's one stylesheet and one script, served from memory (no build step, no npm).
/// Neither holds data, so both are served without a login (the login page needs the stylesheet).
enum ConsoleAssets {
    static func register<Context: RequestContext>(on router: Router<Context>) {
        router.get("/console/assets/console.css") { _, _ in asset(css, type: "text/css; charset=utf-8") }
        router.get("/console/assets/console.js") { _, _ in asset(script, type: "text/javascript; charset=utf-8") }
    }

    static func asset(_ text: String, type: String) -> Response {
        var response = Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: text)))
        response.headers[.contentType] = type
        response.headers[.cacheControl] = "max-age=300"
        response.headers[.xContentTypeOptions] = "nosniff"
        return response
    }

    static let css = """
        :root { --fg: #1d232a; --muted: #5b6570; --line: #d5dbe1; --bg: #f7f8fa; --accent: #0b5cad; --bad: #a4161a; --good: #1b6e3a; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
        header { background: #fff; border-bottom: 1px solid var(--line); padding: .5rem 1rem; display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center; }
        header nav { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center; flex: 1; }
        header ul { list-style: none; display: flex; flex-wrap: wrap; gap: .25rem 1rem; margin: 0; padding: 0; }
        header a { color: var(--accent); text-decoration: none; }
        header a[aria-current=page] { font-weight: 700; text-decoration: underline; text-underline-offset: 4px; }
        .brand { font-weight: 700; color: var(--fg); }
        .who { margin-left: auto; color: var(--muted); display: flex; gap: .5rem; align-items: center; }
        main { padding: 1rem; max-width: 1200px; margin: 0 auto; }
        h1 { font-size: 1.4rem; margin: .25rem 0 1rem; }
        h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
        .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr)); gap: .75rem; }
        .card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; }
        .card .label { color: var(--muted); font-size: .85rem; }
        .card .value { font-size: 1.5rem; font-weight: 700; font-variant-numeric: tabular-nums; }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
        caption { text-align: left; color: var(--muted); padding: .25rem 0; }
        th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
        th { background: #eef1f4; font-weight: 600; }
        td { font-variant-numeric: tabular-nums; }
        .badge { display: inline-block; border: 1px solid currentColor; border-radius: 3px; padding: 0 .35rem; font-size: .85rem; }
        .badge.failed, .badge.restricted, .badge.disconnected { color: var(--bad); font-weight: 700; }
        .badge.succeeded, .badge.active, .badge.connected, .badge.sent { color: var(--good); }
        .badge.paused, .badge.canceled { color: var(--muted); border-style: dashed; }
        form.inline { display: inline-flex; flex-wrap: wrap; gap: .35rem; align-items: center; margin: 0; }
        form.filters { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin-bottom: 1rem; }
        form.filters label, form.login label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); }
        form.login { display: grid; gap: .5rem; max-width: 26rem; }
        input, select, button { font: inherit; padding: .3rem .5rem; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
        button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
        button.danger { background: var(--bad); border-color: var(--bad); }
        .error { color: var(--bad); font-weight: 600; }
        .notice { background: #fff; border-left: 4px solid var(--accent); padding: .5rem .75rem; }
        .hint { color: var(--muted); font-size: .9rem; }
        .visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
        pre { background: #fff; border: 1px solid var(--line); padding: .5rem; overflow-x: auto; white-space: pre-wrap; }
        svg.chart { width: 100%; max-height: 260px; background: #fff; border: 1px solid var(--line); }
        svg.chart text { font: 11px system-ui, sans-serif; fill: var(--muted); }
        .legend { display: flex; gap: 1.5rem; font-size: .9rem; color: var(--muted); }
        @media (max-width: 640px) { .who { margin-left: 0; } main { padding: .5rem; } }
        """

    static let script = """
        "use strict";
        // Overview: reload the figures every 5 s (a short poll of the server-rendered fragment).
        function refreshLoop(box) {
          setInterval(async () => {
            try {
              const r = await fetch(box.dataset.refresh, { credentials: "same-origin" });
              if (r.ok) box.innerHTML = await r.text();
            } catch (e) { /* the next poll tries again */ }
          }, 5000);
        }
        // Live stream: new message.status events every second, appended as text (never markup).
        function streamLoop(table) {
          let cursor = table.dataset.cursor;
          const body = table.querySelector("tbody");
          const filters = document.getElementById("stream-filters");
          filters.addEventListener("submit", (e) => e.preventDefault());
          async function poll() {
            const q = new URLSearchParams(new FormData(filters));
            q.set("cursor", cursor);
            try {
              const r = await fetch("/console/stream/events?" + q.toString(), { credentials: "same-origin" });
              if (r.ok) {
                const page = await r.json();
                cursor = page.cursor;
                for (const e of page.events) {
                  const row = document.createElement("tr");
                  for (const v of [new Date(e.timestamp * 1000).toISOString(), e.org, e.session, e.outboxId, e.kind, e.status, e.errorCode || ""]) {
                    const td = document.createElement("td");
                    td.textContent = v;
                    row.appendChild(td);
                  }
                  body.insertBefore(row, body.firstChild);
                  while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
                }
                document.getElementById("stream-count").textContent = String(body.rows.length);
              }
            } catch (e) { /* the next poll tries again */ }
            setTimeout(poll, 1000);
          }
          poll();
        }
        document.addEventListener("DOMContentLoaded", () => {
          const box = document.querySelector("[data-refresh]");
          if (box) refreshLoop(box);
          const stream = document.getElementById("stream");
          if (stream) streamLoop(stream);
          const all = document.getElementById("select-all");
          if (all) all.addEventListener("change", () => {
            for (const c of document.querySelectorAll("input[name=id]")) c.checked = all.checked;
          });
        });
        """
}
