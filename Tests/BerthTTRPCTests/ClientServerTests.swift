import BerthCore
import BerthTTRPC
import Dispatch
import Foundation
import Testing

@Suite("Client and server over a unix socket")
struct ClientServerTests {
    @Test func unaryEchoAndEmptyReply() throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        #expect(try fixture.call(client, "Echo", "hello") == "hello")
        #expect(try fixture.call(client, "Empty", "ignored") == "")
        #expect(try fixture.call(client, "Echo") == "")
    }

    @Test func aHandlerRegisteredOnTheConnectionThreadRunsThere() throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        #expect(try fixture.call(client, "ThreadName") == "ttrpc-call")
        #expect(try fixture.call(client, "ThreadNameInline") == "ttrpc-conn")
        #expect(try fixture.call(client, "Echo", "after") == "after")
    }

    @Test func socketIsPrivateAndItsDirectoryCreated() throws {
        let fixture = try ServerFixture()
        var info = stat()
        #expect(lstat(fixture.path, &info) == 0)
        #expect(info.st_mode & S_IFMT == S_IFSOCK)
        #expect(info.st_mode & 0o777 == 0o600)
    }

    @Test func metadataKeysAreLowerCasedAndDeadlineArrives() throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        let reply = try client.call(
            service: TestService.name, method: "Metadata",
            metadata: [TTRPCMetadataKey.namespace: ["default"], "X-Trace": ["a", "b"]])
        #expect(String(decoding: reply, as: UTF8.self) == "containerd-namespace-ttrpc=default\nx-trace=a,b")
        let left = try #require(Int(try fixture.call(client, "Deadline", timeout: .seconds(5))))
        #expect(left > 3000 && left <= 5000)
        #expect(try fixture.call(client, "Deadline") == "none")
    }

    @Test func aBlockedCallDoesNotHoldUpOthersOnTheSameConnection() async throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        let blocked = Task { try await onThread { try fixture.call(client, "Block") } }
        // Many calls, from many threads, complete while Block holds its handler.
        try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<32 {
                group.addTask { try await client.call(service: TestService.name, method: "Echo", payload: Array("\(index)".utf8)).string }
            }
            var replies: Set<String> = []
            for try await reply in group { replies.insert(reply) }
            #expect(replies == Set((0..<32).map(String.init)))
        }
        let failures = try await onThread {
            let failures = Counter()
            DispatchQueue.concurrentPerform(iterations: 16) { index in
                if (try? fixture.call(client, "Echo", "t\(index)")) != "t\(index)" { failures.increment() }
            }
            return failures.value
        }
        #expect(failures == 0)
        #expect(try fixture.call(client, "Release") == "")
        #expect(try await blocked.value == "unblocked")
    }

    @Test func handlerErrorsArriveWithTheirCodes() throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        #expect(throws: TTRPCError(.notFound, "container c1: not found")) { try fixture.call(client, "NotFound") }
        #expect(throws: TTRPCError(.failedPrecondition, "task t1: already started")) { try fixture.call(client, "Status") }
        #expect(throws: TTRPCError(.unknown, "something else broke")) { try fixture.call(client, "Other") }
        #expect(throws: TTRPCError(.unimplemented, "method Nope")) { try fixture.call(client, "Nope") }
        #expect(throws: TTRPCError(.unimplemented, "service nope.Svc")) {
            try client.call(service: "nope.Svc", method: "Echo")
        }
        // The connection carries on after errors.
        #expect(try fixture.call(client, "Echo", "after") == "after")
    }

    @Test func deadlinePassesLocally() async throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        let start = ContinuousClock.now
        #expect {
            try fixture.call(client, "Sleep", "3000", timeout: .milliseconds(100))
        } throws: { ($0 as? TTRPCError)?.code == .deadlineExceeded }
        #expect(ContinuousClock.now - start < .seconds(2))

        let asyncStart = ContinuousClock.now
        await #expect {
            try await client.call(service: TestService.name, method: "Sleep", payload: Array("3000".utf8), timeout: .milliseconds(100))
        } throws: { ($0 as? TTRPCError)?.code == .deadlineExceeded }
        #expect(ContinuousClock.now - asyncStart < .seconds(2))
        // A reply within the deadline is unaffected, and the late replies are dropped quietly.
        #expect(try fixture.call(client, "Echo", "in time", timeout: .seconds(5)) == "in time")
    }

    @Test func cancellingAnAsyncCallFailsItAsCanceled() async throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        let call = Task {
            try await client.call(service: TestService.name, method: "Block")
        }
        try await Task.sleep(for: .milliseconds(100))
        call.cancel()
        await #expect {
            try await call.value
        } throws: { ($0 as? TTRPCError)?.code == .canceled }
        #expect(try fixture.call(client, "Echo", "still") == "still")
    }

    @Test func serverClosingFailsPendingCallsAndFiresOnCloseOnce() async throws {
        let fixture = try ServerFixture()
        let closes = Counter()
        let client = try fixture.client { closes.increment() }
        let pending = (0..<3).map { _ in Task { try await onThread { try fixture.call(client, "Block") } } }
        let pendingAsync = Task { try await client.call(service: TestService.name, method: "Block") }
        try await Task.sleep(for: .milliseconds(200))
        fixture.server.close()
        for call in pending {
            await #expect(throws: TTRPCError.closed) { try await call.value }
        }
        await #expect(throws: TTRPCError.closed) { try await pendingAsync.value }
        #expect(eventually { closes.value == 1 })
        #expect(client.isClosed)
        #expect(throws: TTRPCError.closed) { try fixture.call(client, "Echo") }
        client.close()
        try await Task.sleep(for: .milliseconds(50))
        #expect(closes.value == 1)
        // The listener is gone with the server.
        #expect(throws: BerthError.self) { try fixture.client() }
    }

    @Test func clientCloseFiresOnClose() throws {
        let fixture = try ServerFixture()
        let closes = Counter()
        let client = try fixture.client { closes.increment() }
        #expect(try fixture.call(client, "Echo", "x") == "x")
        client.close()
        #expect(eventually { closes.value == 1 })
        #expect(throws: TTRPCError.closed) { try fixture.call(client, "Echo") }
    }

    @Test func manySequentialCalls() throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        for index in 0..<2000 {
            #expect(try fixture.call(client, "Echo", "\(index)") == "\(index)")
        }
    }

    @Test func largeMessagesUpToTheLimit() throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        let big = [UInt8]((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0) })
        #expect(try client.call(service: TestService.name, method: "Echo", payload: big) == big)

        // Too big to send: refused locally, the connection stays.
        #expect {
            try client.call(service: TestService.name, method: "Echo", payload: [UInt8](repeating: 0, count: 5 << 20))
        } throws: { ($0 as? TTRPCError)?.code == .resourceExhausted }
        // A reply too big to send becomes ResourceExhausted from the server.
        #expect {
            try fixture.call(client, "Big", "\(5 << 20)")
        } throws: { error in
            guard case .status(let status) = error as? TTRPCError else { return false }
            return status.code == .resourceExhausted && status.message.hasPrefix("message length ")
        }
        #expect(try fixture.call(client, "Echo", "ok") == "ok")
    }

    @Test func listenReplacesAStaleSocketButNotALiveOne() throws {
        let fixture = try ServerFixture()
        #expect {
            try TTRPCServer().listen(path: fixture.path)
        } throws: { ($0 as? BerthError)?.code == .alreadyExists }

        // A socket file whose server is gone is replaced.
        let stale = fixture.directory.path + "/stale.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(stale.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        close(fd)
        let server = TTRPCServer()
        TestService.register(on: server)
        try server.listen(path: stale)
        defer { server.close() }
        let client = try TTRPCClient(path: stale)
        #expect(String(decoding: try client.call(service: TestService.name, method: "Echo", payload: [0x61]), as: UTF8.self) == "a")
    }

    @Test func servesAnInheritedListener() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/fd3.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(listen(listener, 8) == 0)
        let server = TTRPCServer()
        TestService.register(on: server)
        try server.serve(listenerFD: listener)
        defer { server.close() }
        let client = try TTRPCClient(path: path)
        #expect(try client.call(service: TestService.name, method: "Echo", payload: [1, 2]) == [1, 2])
    }

    @Test func abstractAddressWithoutUnixPrefix() throws {
        let name = "berth-ttrpc-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: [0] + Array(name.utf8)) }
        let length = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + 1 + name.utf8.count
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(length)) }
        }
        #expect(listen(listener, 8) == 0)
        let server = TTRPCServer()
        TestService.register(on: server)
        try server.serve(listenerFD: listener)
        defer { server.close() }
        let client = try TTRPCClient(address: name)
        #expect(try client.call(service: TestService.name, method: "Echo", payload: [9]) == [9])
    }

    @Test func connectingToNothingIsUnavailable() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        #expect {
            try TTRPCClient(path: directory.path + "/none.sock")
        } throws: { ($0 as? BerthError)?.code == .unavailable }
    }

    @Test func gracefulShutdownLetsInFlightCallsFinish() async throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        let slow = Task { try await onThread { try fixture.call(client, "Hold", "held") } }
        try await onThread { fixture.started.wait() }
        try await onThread { fixture.server.shutdown() }
        // Not a clock: on a loaded machine the handler may be nearly done before shutdown starts.
        #expect(fixture.holdsFinished.value == 1)
        #expect(try await slow.value == "held")
        #expect(access(fixture.path, F_OK) != 0)  // socket file removed
        #expect(eventually { client.isClosed })
        fixture.server.waitUntilClosed()
    }

    @Test func shutdownGracePeriodBoundsTheWait() throws {
        let fixture = try ServerFixture()
        let client = try fixture.client()
        let blocked = Thread { _ = try? fixture.call(client, "Block") }
        blocked.start()
        fixture.started.wait()
        let started = ContinuousClock.now
        fixture.server.shutdown(gracePeriod: .milliseconds(200))
        let waited = ContinuousClock.now - started
        #expect(waited >= .milliseconds(150) && waited < .seconds(3))
        #expect(eventually { client.isClosed })
    }

    @Test func sameUserCheckAdmitsThisProcess() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = TTRPCServer(requireSameUser: true)
        TestService.register(on: server)
        try server.listen(path: directory.path + "/s.sock")
        defer { server.close() }
        let client = try TTRPCClient(path: directory.path + "/s.sock")
        #expect(try client.call(service: TestService.name, method: "Echo", payload: [1]) == [1])
    }
}

extension [UInt8] {
    var string: String { String(decoding: self, as: UTF8.self) }
}
