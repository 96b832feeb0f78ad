import ArgumentParser
import OutboxStore

/// For `scripts/bench`: the worker's own claim and completion statements wrapped in one SQL
/// function, so pgbench can measure what PostgreSQL alone does with them (the SQL ceiling).
struct BenchSQLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-sql",
        abstract: "Print wa_bench.cycle(batch, run): the worker's claim and completion statements as one SQL function (for pgbench).",
        shouldDisplay: false
    )

    func run() {
        print("""
            CREATE SCHEMA IF NOT EXISTS wa_bench;
            -- One worker cycle without the worker: claim up to `batch` jobs in runs of up to `run`
            -- (a worker without Redis claims runs of \(RunLimit.longest)) from `lanes` lanes (by default
            -- batch / run, as a worker asks once its claims have seen full runs of a chat; a broadcast,
            -- one job a chat, asks for `batch`) of batch / run sessions (a slot of `run` jobs each),
            -- and complete them all as sent (job rows, events, lanes, sessions), with the statements
            -- the worker issues.
            DROP FUNCTION IF EXISTS wa_bench.cycle(int, int);
            CREATE OR REPLACE FUNCTION wa_bench.cycle(batch int, run int DEFAULT \(RunLimit.longest), lanes int DEFAULT NULL) RETURNS int LANGUAGE plpgsql AS $cycle$
            DECLARE
                r record;
                ids int8[] := '{}';
                claims text[] := '{}';
                worker uuid := gen_random_uuid();
                sessions int := (batch + run - 1) / run;
                n int;
            BEGIN
                FOR r IN EXECUTE $claim$\(ClaimQuery.sql)$claim$ USING sessions * 4, coalesce(lanes, sessions), worker, gen_random_uuid(), run, false, run, batch LOOP
                    ids := ids || r.id;
                    claims := claims || r.claim_token::text;
                END LOOP;
                n := coalesce(array_length(ids, 1), 0);
                IF n = 0 THEN RETURN 0; END IF;
                EXECUTE $complete$\(CompletionQuery.sql)$complete$
                    USING ids, claims, array_fill(worker::text, ARRAY[n]), array_fill('succeeded'::text, ARRAY[n]),
                          array_fill(NULL::text, ARRAY[n]), array_fill(NULL::text, ARRAY[n]), array_fill(0::int8, ARRAY[n]),
                          array_fill(NULL::text, ARRAY[n]), array_fill(NULL::text, ARRAY[n]);
                RETURN n;
            END
            $cycle$;
            """)
    }
}
