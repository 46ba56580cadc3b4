import BerthCore
import BerthTTRPC
import Foundation
import Testing

/// BerthTTRPC against `Peer/ttrpc_peer.py`, an independent peer written in Python from the wire
/// description alone. python3 is a prerequisite: without it these tests fail.
@Suite("Interop with an independent Python peer")
struct InteropTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Peer/ttrpc_peer.py").path

    static func python(_ arguments: [String]) throws -> (process: Process, output: Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = Pipe()
        try process.run()
        return (process, output)
    }

    @Test func swiftClientCallsPythonServer() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/peer.sock"
        let (peer, output) = try Self.python(["server", path])
        defer {
            kill(peer.processIdentifier, SIGKILL)
            peer.waitUntilExit()
        }
        var connected: TTRPCClient?
        #expect(eventually(timeout: .seconds(10)) {
            connected = try? TTRPCClient(address: "unix://" + path)
            return connected != nil || !peer.isRunning
        })
        guard let client = connected else {
            let text = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            Issue.record("python3 peer did not start: \(text)")
            return
        }
        let service = "berth.test.Echo"

        #expect(try await client.call(service: service, method: "Echo", payload: Array("hello".utf8)).string == "hello")
        #expect(try await client.call(service: service, method: "Echo") == [])
        let big = [UInt8]((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 * 7) })
        #expect(try await client.call(service: service, method: "Echo", payload: big) == big)

        let metadata = try await client.call(
            service: service, method: "Metadata",
            metadata: [TTRPCMetadataKey.namespace: ["k8s.io"], "B": ["2", "3"]])
        #expect(metadata.string == "b=2\nb=3\ncontainerd-namespace-ttrpc=k8s.io")

        let timeout = try #require(Int64(try await client.call(service: service, method: "Timeout", timeout: .seconds(3)).string))
        #expect(timeout > 2_000_000_000 && timeout <= 3_000_000_000)
        #expect(try await client.call(service: service, method: "Timeout").string == "0")

        #expect(throws: TTRPCError(.notFound, "container c9: not found")) {
            try client.call(service: service, method: "Fail", payload: Array("5:container c9: not found".utf8))
        }
        #expect(throws: TTRPCError(.unimplemented, "method Nope")) { try client.call(service: service, method: "Nope") }
        #expect(throws: TTRPCError(.unimplemented, "service other.Svc")) { try client.call(service: "other.Svc", method: "Echo") }

        // Replies come back out of order: a slow call does not hold up fast ones.
        let slowDone = Counter()
        let slow = Task {
            defer { slowDone.increment() }
            return try await client.call(service: service, method: "Sleep", payload: Array("1500".utf8))
        }
        for index in 0..<20 {
            #expect(try await client.call(service: service, method: "Echo", payload: Array("\(index)".utf8)).string == "\(index)")
        }
        #expect(slowDone.value == 0)
        #expect(try await slow.value.string == "1500")

        #expect {
            try client.call(service: service, method: "Sleep", payload: Array("2000".utf8), timeout: .milliseconds(100))
        } throws: { ($0 as? TTRPCError)?.code == .deadlineExceeded }

        // The peer going away fails the connection.
        let closed = Counter()
        let second = try TTRPCClient(path: path, onClose: { closed.increment() })
        #expect(try await second.call(service: service, method: "Echo", payload: [1]) == [1])
        let pending = Task { try await onThread { try second.call(service: service, method: "Sleep", payload: Array("5000".utf8)) } }
        try await Task.sleep(for: .milliseconds(200))
        peer.terminate()
        await #expect(throws: TTRPCError.closed) { try await pending.value }
        #expect(eventually { closed.value == 1 })
    }

    @Test func pythonClientCallsSwiftServer() throws {
        let fixture = try ServerFixture()
        let (peer, output) = try Self.python(["client", fixture.path])
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        peer.waitUntilExit()
        #expect(peer.terminationStatus == 0, "python3 peer: \(text)")
        #expect(text.trimmingCharacters(in: .whitespacesAndNewlines) == "ok")
    }
}
