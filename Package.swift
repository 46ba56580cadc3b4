// swift-tools-version: 6.1
// Berth: a containerd-compatible container runtime.
import PackageDescription

let package = Package(
    name: "Berth",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "berthd", targets: ["berthd"]),
        .executable(name: "berth-shim", targets: ["berth-shim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/grpc/grpc-swift-2.git", exact: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", exact: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", exact: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", exact: "7.10.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", exact: "0.6.0"),
    ],
    targets: [
        // Generated protobuf/gRPC code for containerd's API (scripts/gen-proto regenerates it).
        .target(
            name: "BerthAPI",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            exclude: ["README.md"]
        ),
        .target(name: "BerthCore"),
        .target(name: "CBerthSystem"),
        .target(name: "BerthSystem", dependencies: ["BerthCore", "CBerthSystem"]),
        .target(
            name: "BerthContent",
            dependencies: [
                "BerthCore", "BerthSystem",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["README.md"]
        ),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .target(
            name: "BerthArchive",
            dependencies: [
                "BerthCore", "BerthSystem", "CBerthSystem", "CZlib", "CZstd",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["README.md"]
        ),
        .target(
            name: "BerthMetadata",
            dependencies: [
                "BerthCore", "BerthSystem", "BerthContent",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"]
        ),
        .target(
            name: "BerthSnapshots",
            dependencies: ["BerthCore", "BerthSystem", "CBerthSystem", "BerthContent", "BerthArchive", "BerthMetadata"],
            exclude: ["README.md"]
        ),
        // Tasks on the daemon side: runtime v2 shims started, driven over ttrpc, found again after a restart.
        .target(name: "CBerthRuntime"),
        .target(
            name: "BerthRuntime",
            dependencies: [
                "BerthAPI", "BerthCore", "BerthSystem", "BerthMetadata", "BerthTTRPC", "CBerthRuntime", "CBerthSystem",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"]
        ),
        .target(
            name: "BerthServices",
            dependencies: [
                "BerthAPI", "BerthCore", "BerthSystem", "BerthContent", "BerthMetadata", "BerthSnapshots", "BerthTTRPC", "BerthRuntime",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // gRPC's server transport for berthd: HTTP/2 on unix sockets, no NIO.
        .target(
            name: "BerthGRPC",
            dependencies: [
                "BerthCore", "BerthSystem", "BerthTTRPC", "CBerthSystem",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
            ],
            exclude: ["README.md"]
        ),
        .target(
            name: "BerthDaemon",
            dependencies: [
                "BerthAPI", "BerthCore", "BerthSystem", "BerthContent", "BerthMetadata", "BerthSnapshots", "BerthServices", "BerthTTRPC",
                "BerthRuntime", "BerthGRPC",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        .executableTarget(
            name: "berthd",
            dependencies: [
                "BerthDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(name: "BerthTTRPC", dependencies: ["BerthCore", "BerthSystem", "CBerthSystem"], exclude: ["README.md"]),
        .target(name: "BerthTestSupport", dependencies: ["BerthCore"]),
        // The per-container shim: no Foundation, NIO, SwiftProtobuf or Swift concurrency, to stay small.
        .target(
            name: "BerthShim",
            dependencies: ["BerthCore", "BerthSystem", "CBerthSystem", "BerthTTRPC"],
            exclude: ["README.md"]
        ),
        .executableTarget(name: "berth-shim", dependencies: ["BerthShim"]),
        .testTarget(
            name: "BerthShimTests",
            dependencies: [
                "BerthShim", "BerthCore", "BerthAPI", "BerthTTRPC",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .testTarget(name: "BerthCoreTests", dependencies: ["BerthCore"]),
        .testTarget(name: "BerthRuntimeTests", dependencies: ["BerthRuntime", "BerthCore", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "BerthTTRPCTests", dependencies: ["BerthTTRPC", "BerthSystem"], exclude: ["Peer"]),
        .testTarget(name: "BerthSystemTests", dependencies: ["BerthSystem", "BerthCore"]),
        .testTarget(name: "BerthContentTests", dependencies: ["BerthContent", "BerthTestSupport"]),
        .testTarget(name: "BerthArchiveTests", dependencies: ["BerthArchive", "BerthSystem", "BerthTestSupport"]),
        .testTarget(name: "BerthSnapshotsTests", dependencies: ["BerthSnapshots", "BerthTestSupport"]),
        .testTarget(
            name: "BerthMetadataTests",
            dependencies: [
                "BerthMetadata", "BerthContent", "BerthTestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "BerthDaemonTests", dependencies: ["BerthDaemon", "BerthTestSupport"]),
        .testTarget(
            name: "BerthGRPCTests",
            dependencies: [
                "BerthGRPC", "BerthCore",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            ]
        ),
        .testTarget(
            name: "BerthIntegrationTests",
            dependencies: [
                "BerthCore", "BerthTestSupport", "BerthAPI", "BerthTTRPC",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
    ]
)
