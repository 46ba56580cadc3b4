import BerthAPI
import BerthTestSupport
import BerthTTRPC
import Foundation
import SwiftProtobuf
import Testing

/// berthd's ttrpc socket (`<address>.ttrpc`), where runtime v2 shims forward task events.
@Suite("berthd ttrpc events", .serialized)
struct TTRPCEventsTests {
    private func forward(_ client: TTRPCClient, namespace: String, topic: String, event: some SwiftProtobuf.Message,
                         timestamp: Bool = true) throws(TTRPCError) {
        var envelope = Containerd_Services_Events_Ttrpc_V1_Envelope()
        if timestamp { envelope.timestamp = Google_Protobuf_Timestamp(date: Date()) }
        envelope.namespace = namespace
        envelope.topic = topic
        // Shims put the bare message name in the type URL, as containerd's typeurl does.
        envelope.event = Google_Protobuf_Any()
        envelope.event.typeURL = "containerd.events." + String(describing: type(of: event)).replacingOccurrences(of: "Containerd_Events_", with: "")
        envelope.event.value = (try? event.serializedData()) ?? Data()
        var request = Containerd_Services_Events_Ttrpc_V1_ForwardRequest()
        request.envelope = envelope
        let payload = Array((try? request.serializedData()) ?? Data())
        _ = try client.call(service: "containerd.services.events.ttrpc.v1.Events", method: "Forward", payload: payload,
                            timeout: .seconds(5))
    }

    @Test("a forwarded task event reaches ctr events; bad envelopes are INVALID_ARGUMENT")
    func forwardedEventsReachSubscribers() async throws {
        try await withDaemon { daemon in
            let ttrpcSocket = "\(daemon.socket).ttrpc"
            var status = stat()
            try #require(stat(ttrpcSocket, &status) == 0, "berthd did not create \(ttrpcSocket)")
            #expect(status.st_mode & S_IFMT == S_IFSOCK)
            #expect(status.st_mode & 0o777 == 0o600)

            let subscriber = try Command.start(["ctr", "--address", daemon.socket, "events"])
            defer { subscriber.stop(signal: SIGKILL) }
            usleep(300_000)

            let client = try TTRPCClient(path: ttrpcSocket)
            defer { client.close() }
            var start = Containerd_Events_TaskStart()
            start.containerID = "ttrpc-c1"
            start.pid = 4242
            try forward(client, namespace: "default", topic: "/tasks/start", event: start)

            var output = ""
            for _ in 0..<100 {
                output = subscriber.stdoutSoFar
                if output.contains("/tasks/start") { break }
                usleep(50_000)
            }
            #expect(output.contains("default /tasks/start"), "ctr events printed:\n\(output)")
            #expect(output.contains("\"container_id\":\"ttrpc-c1\""), "ctr events printed:\n\(output)")
            #expect(output.contains("\"pid\":4242"), "ctr events printed:\n\(output)")

            let exit = Containerd_Events_TaskExit()
            for (namespace, topic, timestamp, words) in [("default", "tasks/exit", true, "must start with '/'"),
                                                        ("bad ns!", "/tasks/exit", true, "namespace"),
                                                        ("default", "/tasks/exit", false, "timestamp")] {
                do {
                    try forward(client, namespace: namespace, topic: topic, event: exit, timestamp: timestamp)
                    Issue.record("forward of \(namespace) \(topic) succeeded")
                } catch let error as TTRPCError {
                    #expect(error.code == .invalidArgument, "\(error)")
                    #expect("\(error)".contains(words), "\(error)")
                } catch {
                    Issue.record("unexpected error \(error)")
                }
            }
            daemon.stop()
            #expect(!FileManager.default.fileExists(atPath: ttrpcSocket))
        }
    }
}
