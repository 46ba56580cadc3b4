#if canImport(Glibc)
import Glibc
#endif
import BerthCore
@testable import BerthRuntime
import Foundation
import Testing

@Suite("runtime name → shim binary")
struct ShimResolverTests {
    /// A directory with executable files `names` (and one that is not executable).
    func withBinaries<T>(_ names: [String], _ body: (String) throws -> T) throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-rt-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for name in names {
            FileManager.default.createFile(atPath: "\(directory)/\(name)", contents: Data("#!/bin/sh\n".utf8),
                                           attributes: [.posixPermissions: 0o755])
        }
        FileManager.default.createFile(atPath: "\(directory)/containerd-shim-plain-v1", contents: Data(),
                                       attributes: [.posixPermissions: 0o644])
        return try body(directory)
    }

    @Test("containerd's binary name rule")
    func binaryNames() {
        #expect(ShimResolver.binaryName("io.containerd.runc.v2") == "containerd-shim-runc-v2")
        #expect(ShimResolver.binaryName("io.containerd.kata.v2") == "containerd-shim-kata-v2")
        #expect(ShimResolver.binaryName("io.containerd.wasmtime.v1") == "containerd-shim-wasmtime-v1")
        #expect(ShimResolver.binaryName("runc") == nil)
        #expect(ShimResolver.binaryName("io.containerd.") == nil)
    }

    @Test("config first, then berth-shim for runc names, containerd-shim-X-vN on PATH, absolute paths as is")
    func resolution() throws {
        try withBinaries(["berth-shim", "containerd-shim-runc-v2", "containerd-shim-kata-v2", "my-shim"]) { (directory: String) throws in
            let resolver = ShimResolver(configured: ["io.containerd.runc.v2": "\(directory)/containerd-shim-runc-v2",
                                                     "io.example.named.v1": "my-shim",
                                                     "io.example.missing.v1": "/nonexistent/shim"],
                                        daemonDirectory: directory, searchPath: ["/nonexistent", directory])
            #expect(try resolver.resolve("io.containerd.runc.v2") == "\(directory)/containerd-shim-runc-v2")
            #expect(try resolver.resolve("io.containerd.runc.v1") == "\(directory)/berth-shim")
            #expect(try resolver.resolve("io.containerd.kata.v2") == "\(directory)/containerd-shim-kata-v2")
            #expect(try resolver.resolve("io.example.named.v1") == "\(directory)/my-shim")
            #expect(try resolver.resolve("\(directory)/my-shim") == "\(directory)/my-shim")

            for (runtime, words) in [("io.containerd.nope.v1", "containerd-shim-nope-v1"),
                                     ("io.containerd.plain.v1", "containerd-shim-plain-v1"),
                                     ("io.example.missing.v1", "/nonexistent/shim"),
                                     ("/nonexistent/shim", "/nonexistent/shim")] {
                #expect {
                    try resolver.resolve(runtime)
                } throws: { error in
                    guard let error = error as? BerthError else { return false }
                    return error.code == .notFound && error.message.contains(words)
                }
            }
            #expect(throws: BerthError.self) { try resolver.resolve("runc") }
        }
    }

    @Test("berth-shim next to berthd wins over PATH")
    func berthShimNextToDaemon() throws {
        try withBinaries(["berth-shim"]) { (daemonDirectory: String) throws in
            try withBinaries(["berth-shim"]) { (pathDirectory: String) throws in
                let resolver = ShimResolver(configured: [:], daemonDirectory: daemonDirectory, searchPath: [pathDirectory])
                #expect(try resolver.resolve("io.containerd.runc.v2") == "\(daemonDirectory)/berth-shim")
                let fromPath = ShimResolver(configured: [:], daemonDirectory: "/nonexistent", searchPath: [pathDirectory])
                #expect(try fromPath.resolve("io.containerd.runc.v2") == "\(pathDirectory)/berth-shim")
            }
        }
    }

    @Test("a shim's start output: the bare address, or containerd 1.7's JSON")
    func startOutput() {
        #expect(ShimAddress.parse("unix:///run/containerd/s/abc\n") == "unix:///run/containerd/s/abc")
        #expect(ShimAddress.parse(#"{"version":2,"address":"unix:///run/x.sock","protocol":"ttrpc"}"#) == "unix:///run/x.sock")
        #expect(ShimAddress.parse("  ") == "")
    }
}
