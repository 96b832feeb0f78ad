// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "wa-outbox",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "wa-outbox", targets: ["wa-outbox"]),
        .library(name: "PostgresClient", targets: ["PostgresClient"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
        .library(name: "OutboxStore", targets: ["OutboxStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-otel/swift-w3c-trace-context.git", from: "1.0.0"),
        // The OTLP/HTTP exporter only: the gRPC one would bring grpc-swift into every build.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        // Property-based tests of hostile input (tests only).
        .package(url: "https://github.com/x-sheep/swift-property-based.git", exact: "2.0.1"),
    ],
    targets: [
        // C libraries, found through pkg-config and installed from Debian.
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        // mallopt(3), which Glibc's Swift module does not export: the executable caps malloc arenas.
        .target(name: "CMallocTuning"),

        // Thread confinement for blocking C clients, and the connection pool both clients share.
        .target(
            name: "ConnectionKit",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "PostgresClient",
            dependencies: ["CLibPQ", "ConnectionKit", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "RedisClient",
            dependencies: ["CHiredis", "ConnectionKit", .product(name: "Logging", package: "swift-log"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        // Output written from a dedicated thread: log lines and the simulator's delivery log.
        .target(
            name: "LineOutput",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // The domain: jobs, payloads, error codes and the retry policy. No I/O (swift-crypto only to compare secrets).
        .target(name: "OutboxCore", dependencies: [.product(name: "Crypto", package: "swift-crypto"),
                                           .product(name: "W3CTraceContext", package: "swift-w3c-trace-context")], swiftSettings: swiftSettings),
        // The database side of the outbox: migrations, enqueue, claim, completion, events.
        .target(
            name: "OutboxStore",
            dependencies: ["OutboxCore", "PostgresClient", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // Redis: per-session rate limits, pacing and budgets, dispatch and idempotency locks.
        .target(
            name: "Coordination",
            dependencies: ["OutboxCore", "RedisClient", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // The seam to WhatsApp: one protocol, one adapter per engine.
        .target(
            name: "Engines",
            dependencies: [
                "OutboxCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // A WhatsApp that keeps WhatsApp's rules: in-process, and over HTTP in wuzapi's dialect.
        .target(
            name: "Simulator",
            dependencies: [
                "Engines", "OutboxCore", "Receipts", "LineOutput", .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // One job's way to WhatsApp, shared by the worker and the API: prepare, preflight, admit,
        // perform or reconcile, outcome. Knows no engine by name: the executable registers them.
        .target(
            name: "JobDispatch",
            dependencies: [
                "OutboxCore", "OutboxStore", "Engines", "Coordination", "PostgresClient",
                .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),
        // The worker process: the claim loop, the completion writer, the lease keeper, and the
        // maintenance services (rescue, prune, vacuum, session health, receipts, gauges).
        .target(
            name: "Worker",
            dependencies: [
                "OutboxCore", "OutboxStore", "Engines", "JobDispatch", "Coordination", "PostgresClient",
                .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Delivery and read receipts from the engines' webhooks: signatures and payloads.
        .target(
            name: "Receipts",
            dependencies: ["OutboxCore", "OutboxStore", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        // What every HTTP surface shares (the admin port now, the gateway API next): the error envelope.
        .target(
            name: "HTTPSurface",
            dependencies: ["OutboxCore", .product(name: "Hummingbird", package: "hummingbird"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // The worker's HTTP port: /healthz, /readyz, /metrics, the operator API, receipt webhooks.
        .target(
            name: "Admin",
            dependencies: [
                "OutboxStore", "PostgresClient", "RedisClient", "Coordination", "Receipts", "HTTPSurface",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        // The operator console at /console: server-rendered pages, served by the API and the admin port.
        .target(
            name: "Console",
            dependencies: [
                "OutboxCore", "OutboxStore", "HTTPSurface", "PostgresClient",
                .product(name: "Hummingbird", package: "hummingbird"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The gateway's HTTP API (`wa-outbox api`): messages, idempotency, authentication, events.
        .target(
            name: "GatewayAPI",
            dependencies: [
                "OutboxCore", "OutboxStore", "Coordination", "HTTPSurface", "PostgresClient", "JobDispatch",
                .product(name: "Hummingbird", package: "hummingbird"), .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"), .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
            ],
            resources: [.copy("OpenAPI/openapi.json")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "wa-outbox",
            dependencies: [
                "OutboxCore", "OutboxStore", "PostgresClient", "RedisClient", "Engines", "Simulator", "JobDispatch", "Worker", "Coordination",
                "Admin", "Receipts", "CMallocTuning", "LineOutput", "GatewayAPI", "Console",
                .product(name: "Metrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "OTel", package: "swift-otel"),
            ],
            swiftSettings: swiftSettings
        ),

        // Tests. Every suite below talks to real servers started by scripts/test.
        .target(
            name: "TestSupport",
            dependencies: ["PostgresClient", "RedisClient", "Simulator", "LineOutput", .product(name: "Logging", package: "swift-log"),
                           .product(name: "AsyncHTTPClient", package: "async-http-client"), .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOHTTP1", package: "swift-nio")],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "PostgresClientTests",
            dependencies: ["PostgresClient", "ConnectionKit", "TestSupport", .product(name: "Logging", package: "swift-log"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RedisClientTests",
            dependencies: ["RedisClient", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LineOutputTests",
            dependencies: ["LineOutput", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "OutboxCoreTests",
            dependencies: ["OutboxCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WorkerTests",
            dependencies: [
                "Worker", "JobDispatch", "OutboxStore", "OutboxCore", "Engines", "Simulator", "Coordination", "RedisClient", "PostgresClient",
                "TestSupport", "Receipts",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayAPITests",
            dependencies: [
                "GatewayAPI", "OutboxStore", "OutboxCore", "Coordination", "PostgresClient", "RedisClient", "TestSupport", "HTTPSurface",
                "Worker", "JobDispatch", "Simulator", "Console", .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "JWTKit", package: "jwt-kit"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "OutboxStoreTests",
            dependencies: ["OutboxStore", "OutboxCore", "PostgresClient", "TestSupport", .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: swiftSettings
        ),
    ]
)
