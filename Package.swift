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
    ],
    targets: [
        // C libraries, found through pkg-config and installed from Debian.
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),

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
            dependencies: ["CHiredis", "ConnectionKit", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // The database side of the outbox: migrations, enqueue, claim, completion, events.
        .target(
            name: "OutboxStore",
            dependencies: ["PostgresClient", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "wa-outbox",
            dependencies: [
                "OutboxStore", "PostgresClient", "RedisClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // Tests. Every suite below talks to real servers started by scripts/test.
        .target(
            name: "TestSupport",
            dependencies: ["PostgresClient", "RedisClient", .product(name: "Logging", package: "swift-log")],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "PostgresClientTests",
            dependencies: ["PostgresClient", "ConnectionKit", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RedisClientTests",
            dependencies: ["RedisClient", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "OutboxStoreTests",
            dependencies: ["OutboxStore", "PostgresClient", "TestSupport"],
            swiftSettings: swiftSettings
        ),
    ]
)
