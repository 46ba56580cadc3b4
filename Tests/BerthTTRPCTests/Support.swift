import BerthCore
import BerthSystem
import BerthTTRPC
import Dispatch
import Foundation

/// A fresh directory under /tmp, removed by `remove()`. Short, because socket paths are limited
/// to 107 bytes.
struct TemporaryDirectory: Sendable {
    let path: String

    init() throws {
        var template = Array("/tmp/berth-ttrpc-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw BerthError.internal("mkdtemp failed") }
        path = String(cString: made)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Lets a test hold a handler until it chooses to release it.
final class Gate: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func wait() { semaphore.wait() }
    func open(_ count: Int = 1) { for _ in 0..<count { semaphore.signal() } }
}

/// Counts how often something happened, from any thread.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}

struct SomeOtherError: Error, CustomStringConvertible {
    var description: String { "something else broke" }
}

enum TestService {
    static let name = "berth.test.Swift"

    /// Registers the test service that both the Swift tests and the Python client call.
    static func register(on server: TTRPCServer, gate: Gate = Gate(), started: Gate = Gate(), holdsFinished: Counter = Counter()) {
        server.register(service: name, method: "Echo") { _, payload in payload }
        server.register(service: name, method: "Empty") { _, _ in [] }
        server.register(service: name, method: "ThreadName") { _, _ in currentThreadName() }
        server.register(service: name, method: "ThreadNameInline", onConnectionThread: true) { _, _ in currentThreadName() }
        server.register(service: name, method: "Metadata") { context, _ in
            let lines = context.metadata.keys.sorted().map { "\($0)=\(context.metadata[$0]!.joined(separator: ","))" }
            return Array(lines.joined(separator: "\n").utf8)
        }
        server.register(service: name, method: "Deadline") { context, _ in
            guard let deadline = context.deadline else { return Array("none".utf8) }
            return Array(String(MonotonicInstant.now.nanoseconds(to: deadline) / 1_000_000).utf8)
        }
        server.register(service: name, method: "NotFound") { _, _ in
            throw BerthError.notFound("container c1: not found")
        }
        server.register(service: name, method: "Status") { _, _ in
            throw TTRPCError(.failedPrecondition, "task t1: already started")
        }
        server.register(service: name, method: "Other") { _, _ in
            throw SomeOtherError()
        }
        server.register(service: name, method: "Sleep") { _, payload in
            let milliseconds = Int(String(decoding: payload, as: UTF8.self)) ?? 0
            usleep(UInt32(milliseconds * 1000))
            return payload
        }
        server.register(service: name, method: "Block") { _, _ in
            started.open()
            gate.wait()
            return Array("unblocked".utf8)
        }
        server.register(service: name, method: "Hold") { _, payload in
            started.open()
            usleep(300_000)
            holdsFinished.increment()
            return payload
        }
        server.register(service: name, method: "Release") { _, _ in
            gate.open()
            return []
        }
        server.register(service: name, method: "Big") { _, payload in
            [UInt8](repeating: 7, count: Int(String(decoding: payload, as: UTF8.self))!)
        }
        server.registerStreaming(service: name, method: "Count") { _, payload, stream in
            let count = Int(String(decoding: payload, as: UTF8.self)) ?? 0
            guard count >= 0 else { throw BerthError.invalidArgument("count \(count): must not be negative") }
            for index in 0..<count {
                try stream.send(Array(String(index).utf8))
            }
        }
        server.registerStreaming(service: name, method: "Join") { _, payload, stream in
            var joined = payload
            while let next = try stream.receive() {
                joined += next
            }
            try stream.send(joined)
        }
    }
}

/// A server on a socket in a fresh directory, with the test service registered.
final class ServerFixture: Sendable {
    let directory: TemporaryDirectory
    let path: String
    let server: TTRPCServer
    let gate = Gate()
    /// Opened each time a Hold or Block call has reached its handler.
    let started = Gate()
    /// Hold calls whose handler has returned.
    let holdsFinished = Counter()

    init() throws {
        directory = try TemporaryDirectory()
        path = directory.path + "/run/ttrpc.sock"
        server = TTRPCServer()
        TestService.register(on: server, gate: gate, started: started, holdsFinished: holdsFinished)
        try server.listen(path: path)
    }

    func client(onClose: (@Sendable () -> Void)? = nil) throws -> TTRPCClient {
        try TTRPCClient(address: "unix://" + path, onClose: onClose)
    }

    func call(_ client: TTRPCClient, _ method: String, _ text: String = "", timeout: Duration? = nil) throws -> String {
        let reply = try client.call(service: TestService.name, method: method, payload: Array(text.utf8), timeout: timeout)
        return String(decoding: reply, as: UTF8.self)
    }

    deinit {
        gate.open(100)
        server.close()
        directory.remove()
    }
}

/// Runs blocking work on a thread of its own, so that tests never block the cooperative pool
/// (two threads on a two-core machine) on a call that waits for something else.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Waits until `condition` holds, for at most `timeout`.
func eventually(timeout: Duration = .seconds(5), _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// The calling thread's name, as its bytes.
func currentThreadName() -> [UInt8] {
    let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
    return Array(comm.trimmingCharacters(in: .newlines).utf8)
}
