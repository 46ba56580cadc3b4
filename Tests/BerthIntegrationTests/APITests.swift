import BerthAPI
import BerthTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf
import Testing

/// The parts of containerd's API that ctr cannot reach, called through the generated client.
/// Expected behaviour is containerd 1.6's (metadata/*.go, services/*, events/exchange).
@Suite("containerd API through gRPC")
struct APITests {
    typealias HTTP2Transport = HTTP2ClientTransport.Posix
    typealias Containers = Containerd_Services_Containers_V1_Containers.Client<HTTP2Transport>

    static let specTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    /// Deliberately not canonical JSON (spacing, key order, escapes): it must come back as sent.
    static let specJSON = Data(#"{"ociVersion":"1.0.2-dev", "process":{"args":["sh","-c","echo \u00e9"],"cwd":"/"},"root":{"path":"rootfs"} ,"z":[1,2.50]}"#.utf8)

    static func spec(_ payload: Data = specJSON) -> Google_Protobuf_Any {
        var any = Google_Protobuf_Any()
        any.typeURL = specTypeURL
        any.value = payload
        return any
    }

    static func container(_ id: String, labels: [String: String] = [:], image: String = "docker.io/library/busybox:latest",
                          runtime: String = "io.containerd.runc.v2", spec: Google_Protobuf_Any? = spec()) -> APIContainer {
        var container = APIContainer()
        container.id = id
        container.labels = labels
        container.image = image
        container.runtime.name = runtime
        if let spec { container.spec = spec }
        return container
    }

    static func create(_ containers: Containers, _ container: APIContainer, in namespace: String = "default") async throws -> APIContainer {
        var request = Containerd_Services_Containers_V1_CreateContainerRequest()
        request.container = container
        return try await containers.create(request, metadata: ns(namespace)).container
    }

    static func get(_ containers: Containers, _ id: String, in namespace: String = "default") async throws -> APIContainer {
        var request = Containerd_Services_Containers_V1_GetContainerRequest()
        request.id = id
        return try await containers.get(request, metadata: ns(namespace)).container
    }

    static func list(_ containers: Containers, _ filters: [String], in namespace: String = "default") async throws -> [APIContainer] {
        var request = Containerd_Services_Containers_V1_ListContainersRequest()
        request.filters = filters
        return try await containers.list(request, metadata: ns(namespace)).containers
    }

    static func listStream(_ containers: Containers, _ filters: [String], in namespace: String = "default") async throws -> [APIContainer] {
        var request = Containerd_Services_Containers_V1_ListContainersRequest()
        request.filters = filters
        return try await containers.listStream(request, metadata: ns(namespace)) { response in
            var found: [APIContainer] = []
            for try await message in response.messages { found.append(message.container) }
            return found
        }
    }

    static func update(_ containers: Containers, _ container: APIContainer, paths: [String]?, in namespace: String = "default") async throws -> APIContainer {
        var request = Containerd_Services_Containers_V1_UpdateContainerRequest()
        request.container = container
        if let paths { request.updateMask = Google_Protobuf_FieldMask(protoPaths: paths) }
        return try await containers.update(request, metadata: ns(namespace)).container
    }

    static func delete(_ containers: Containers, _ id: String, in namespace: String = "default") async throws {
        var request = Containerd_Services_Containers_V1_DeleteContainerRequest()
        request.id = id
        _ = try await containers.delete(request, metadata: ns(namespace))
    }

    // MARK: Containers

    @Test("Containers/Create validates the container and refuses duplicates; Get and Delete answer notFound for missing ones")
    func containerCreateValidation() async throws {
        try await withDaemonAndClient { _, client in
            let containers = Containers(wrapping: client)
            await expectRPCError(.invalidArgument, "must not be empty") { try await Self.create(containers, Self.container("")) }
            await expectRPCError(.invalidArgument, "must match") { try await Self.create(containers, Self.container("bad id!")) }
            await expectRPCError(.invalidArgument, "must match") { try await Self.create(containers, Self.container("-leading")) }
            await expectRPCError(.invalidArgument, "Runtime.Name", "must be set") {
                try await Self.create(containers, Self.container("no-runtime", runtime: ""))
            }
            await expectRPCError(.invalidArgument, "Spec", "must be set") {
                try await Self.create(containers, Self.container("no-spec", spec: nil))
            }
            var snapshotKeyOnly = Self.container("key-only")
            snapshotKeyOnly.snapshotKey = "key-only"
            await expectRPCError(.invalidArgument, "Snapshotter must be set") { try await Self.create(containers, snapshotKeyOnly) }
            #expect(try await Self.list(containers, []).isEmpty, "a refused create stores nothing")

            let created = try await Self.create(containers, Self.container("web", labels: ["team": "blue"]))
            #expect(created.id == "web")
            #expect(created.labels == ["team": "blue"])
            #expect(created.hasCreatedAt && created.createdAt == created.updatedAt)
            await expectRPCError(.alreadyExists, "already exists") { try await Self.create(containers, Self.container("web")) }
            // The same id in another namespace is another container.
            _ = try await Self.create(containers, Self.container("web"), in: "other")

            await expectRPCError(.notFound, "not found") { try await Self.get(containers, "missing") }
            await expectRPCError(.notFound, "not found") { try await Self.get(containers, "web", in: "third") }
            try await Self.delete(containers, "web")
            await expectRPCError(.notFound, "not found") { try await Self.get(containers, "web") }
            await expectRPCError(.notFound, "not found") { try await Self.delete(containers, "web") }
            await expectRPCError(.notFound, "not found") { try await Self.delete(containers, "web") }
            #expect(try await Self.get(containers, "web", in: "other").id == "web", "deleting in default leaves other's")
        }
    }

    @Test("Containers/List filters on labels, image and runtime name; ListStream returns the same set")
    func containerListFilters() async throws {
        try await withDaemonAndClient { _, client in
            let containers = Containers(wrapping: client)
            _ = try await Self.create(containers, Self.container("a", labels: ["io.berth/team": "blue", "tier": "web"]))
            _ = try await Self.create(containers, Self.container("b", labels: ["io.berth/team": "red"], image: "docker.io/library/alpine:3"))
            _ = try await Self.create(containers, Self.container("c", labels: ["tier": "web"], runtime: "io.containerd.runsc.v1"))
            _ = try await Self.create(containers, Self.container("d", labels: ["io.berth/team": "blue"]), in: "other")

            let cases: [(filters: [String], ids: [String])] = [
                ([], ["a", "b", "c"]),
                ([#"labels."io.berth/team"==blue"#], ["a"]),
                (["labels.tier==web"], ["a", "c"]),
                ([#"labels."io.berth/team""#], ["a", "b"]),
                ([#"labels."io.berth/team"!=blue"#], ["b", "c"]),
                ([#"image=="docker.io/library/alpine:3""#], ["b"]),
                ([#"image=="docker.io/library/busybox:latest""#], ["a", "c"]),
                ([#"runtime.name=="io.containerd.runsc.v1""#], ["c"]),
                ([#"runtime.name=="io.containerd.runc.v2",labels.tier==web"#], ["a"]),
                ([#"runtime.name=="io.containerd.runsc.v1""#, #"labels."io.berth/team"==red"#], ["b", "c"]),
                (["id~=^[ab]$"], ["a", "b"]),
                ([#"labels."io.berth/team"==green"#], []),
            ]
            for (filters, ids) in cases {
                let listed = try await Self.list(containers, filters)
                #expect(listed.map(\.id).sorted() == ids, "List \(filters)")
                let streamed = try await Self.listStream(containers, filters)
                #expect(streamed.sorted { $0.id < $1.id } == listed.sorted { $0.id < $1.id }, "ListStream \(filters)")
            }
            #expect(try await Self.list(containers, [], in: "other").map(\.id) == ["d"])
            await expectRPCError(.invalidArgument, "filter") { try await Self.list(containers, ["labels.tier=="]) }
            await expectRPCError(.invalidArgument, "filter") { try await Self.listStream(containers, ["image=~x"]) }
        }
    }

    @Test("Containers/Update applies a field mask; unknown paths and changed immutable fields are refused")
    func containerUpdate() async throws {
        try await withDaemonAndClient { _, client in
            let containers = Containers(wrapping: client)
            var initial = Self.container("app", labels: ["keep": "1", "k": "old", "gone": "x"])
            initial.extensions["x"] = { var a = Google_Protobuf_Any(); a.typeURL = "types.berth.test/X"; a.value = Data([1, 2, 3]); return a }()
            initial.extensions["y"] = { var a = Google_Protobuf_Any(); a.typeURL = "types.berth.test/Y"; a.value = Data([9]); return a }()
            let created = try await Self.create(containers, initial)
            try await Task.sleep(for: .milliseconds(5))

            // labels.k: only that label changes; a masked label absent from the request is removed.
            var change = Self.container("app", labels: ["k": "new", "keep": "ignored"], image: "ignored", spec: Self.spec(Data("{}".utf8)))
            var updated = try await Self.update(containers, change, paths: ["labels.k", "labels.gone"])
            #expect(updated.labels == ["keep": "1", "k": "new"])
            #expect(updated.image == created.image)
            #expect(updated.spec == created.spec)
            #expect(updated.extensions == created.extensions)
            #expect(updated.createdAt == created.createdAt)
            #expect(updated.updatedAt.date > created.updatedAt.date, "updatedAt advances")
            #expect(try await Self.get(containers, "app") == updated, "Get sees what Update returned")

            // image
            change = Self.container("app", image: "docker.io/library/alpine:3")
            let previous = updated
            updated = try await Self.update(containers, change, paths: ["image"])
            #expect(updated.image == "docker.io/library/alpine:3")
            #expect(updated.labels == previous.labels)
            #expect(updated.updatedAt.date > previous.updatedAt.date)
            #expect(updated.createdAt == created.createdAt)

            // spec: replaced byte for byte
            let newSpec = Data(#"{"ociVersion":"1.1.0","annotations":{"a":"b"}}"#.utf8)
            change = Self.container("app", spec: Self.spec(newSpec))
            updated = try await Self.update(containers, change, paths: ["spec"])
            #expect(updated.spec.value == newSpec)
            #expect(updated.spec.typeURL == Self.specTypeURL)

            // extensions.x: only that extension changes
            change = Self.container("app")
            change.extensions["x"] = { var a = Google_Protobuf_Any(); a.typeURL = "types.berth.test/X2"; a.value = Data([4, 5]); return a }()
            change.extensions["y"] = { var a = Google_Protobuf_Any(); a.typeURL = "types.berth.test/ignored"; return a }()
            updated = try await Self.update(containers, change, paths: ["extensions.x"])
            #expect(updated.extensions["x"]?.typeURL == "types.berth.test/X2")
            #expect(updated.extensions["x"]?.value == Data([4, 5]))
            #expect(updated.extensions["y"] == initial.extensions["y"])

            let beforeRefusals = try await Self.get(containers, "app")
            await expectRPCError(.invalidArgument, "cannot update", "runtime") {
                try await Self.update(containers, Self.container("app"), paths: ["runtime"])
            }
            await expectRPCError(.invalidArgument, "cannot update", "nosuchfield") {
                try await Self.update(containers, Self.container("app"), paths: ["labels.k", "nosuchfield"])
            }
            // Full replace (no mask): a changed runtime name is immutable.
            await expectRPCError(.invalidArgument, "Runtime.Name", "immutable") {
                try await Self.update(containers, Self.container("app", runtime: "io.containerd.runsc.v1"), paths: nil)
            }
            // A masked update that would leave the container invalid is refused.
            await expectRPCError(.invalidArgument, "Spec must be set") {
                try await Self.update(containers, Self.container("app", spec: nil), paths: ["spec"])
            }
            await expectRPCError(.invalidArgument, "ID required") { try await Self.update(containers, Self.container(""), paths: ["image"]) }
            await expectRPCError(.notFound, "not found") { try await Self.update(containers, Self.container("nope"), paths: ["image"]) }
            #expect(try await Self.get(containers, "app") == beforeRefusals, "refused updates change nothing")

            // Full replace with the same runtime replaces labels, spec, extensions and image.
            let replacement = Self.container("app", labels: ["only": "this"], image: "example.com/app:2")
            updated = try await Self.update(containers, replacement, paths: nil)
            #expect(updated.labels == ["only": "this"])
            #expect(updated.image == "example.com/app:2")
            #expect(updated.extensions.isEmpty)
            #expect(updated.spec == Self.spec())
            #expect(updated.createdAt == created.createdAt)
        }
    }

    @Test("a container's spec and runtime options round-trip byte for byte")
    func containerSpecRoundTrip() async throws {
        try await withDaemonAndClient { _, client in
            let containers = Containers(wrapping: client)
            var container = Self.container("spec")
            var options = Google_Protobuf_Any()
            options.typeURL = "containerd.runc.v1.Options"
            options.value = Data([0x0A, 0x00, 0xFF, 0x80, 0x10, 0x01])  // not valid for the type: stored, not parsed
            container.runtime.options = options
            container.snapshotter = "overlayfs"
            container.snapshotKey = "spec-snapshot"
            container.sandbox = "sandbox-1"

            let created = try await Self.create(containers, container)
            let got = try await Self.get(containers, "spec")
            let listed = try await Self.list(containers, ["id==spec"])
            let streamed = try await Self.listStream(containers, ["id==spec"])
            for (what, c) in [("Create", created), ("Get", got), ("List", listed.first ?? APIContainer()), ("ListStream", streamed.first ?? APIContainer())] {
                #expect(c.spec.typeURL == Self.specTypeURL, "\(what)")
                #expect(c.spec.value == Self.specJSON, "\(what) changed the spec bytes")
                #expect(c.runtime.options == options, "\(what)")
                #expect(c.runtime.name == "io.containerd.runc.v2", "\(what)")
                #expect(c.snapshotter == "overlayfs" && c.snapshotKey == "spec-snapshot" && c.sandbox == "sandbox-1", "\(what)")
            }
            #expect(got == created)
        }
    }

    // MARK: Events

    static func publish(_ client: APIClient, topic: String, event: Google_Protobuf_Any, in namespace: String) async throws {
        var request = Containerd_Services_Events_V1_PublishRequest()
        request.topic = topic
        request.event = event
        _ = try await Containerd_Services_Events_V1_Events.Client(wrapping: client).publish(request, metadata: ns(namespace))
    }

    static func forward(_ client: APIClient, _ envelope: APIEnvelope, metadata: Metadata = ns("default")) async throws {
        var request = Containerd_Services_Events_V1_ForwardRequest()
        request.envelope = envelope
        _ = try await Containerd_Services_Events_V1_Events.Client(wrapping: client).forward(request, metadata: metadata)
    }

    static func event(_ bytes: [UInt8], type: String = "types.berth.test/Probe") -> Google_Protobuf_Any {
        var any = Google_Protobuf_Any()
        any.typeURL = type
        any.value = Data(bytes)
        return any
    }

    static func containerID(_ envelope: APIEnvelope) -> String? {
        switch envelope.topic {
        case "/containers/create": try? Containerd_Events_ContainerCreate(serializedBytes: envelope.event.value).id
        case "/containers/update": try? Containerd_Events_ContainerUpdate(serializedBytes: envelope.event.value).id
        case "/containers/delete": try? Containerd_Events_ContainerDelete(serializedBytes: envelope.event.value).id
        default: nil
        }
    }

    @Test("Events/Subscribe with a topic filter sees only container creations")
    func subscribeTopicFilter() async throws {
        try await withDaemonAndClient { _, client in
            let containers = Containers(wrapping: client)
            try await withSubscription(client, filters: [#"topic=="/containers/create""#]) { log in
                var probes = 0
                try await log.synchronize({
                    _ = try await Self.create(containers, Self.container("probe-\(probes)"))
                    probes += 1
                }, until: { Self.containerID($0)?.hasPrefix("probe-") == true })

                _ = try await Self.create(containers, Self.container("one", labels: ["a": "1"]))
                _ = try await Self.update(containers, Self.container("one", labels: ["a": "2"]), paths: ["labels.a"])
                try await Self.delete(containers, "one")
                _ = try await Self.create(containers, Self.container("two"), in: "elsewhere")
                try await Self.delete(containers, "two", in: "elsewhere")
                _ = try await Self.create(containers, Self.container("three"))
                #expect(try await log.wait { $0.contains { Self.containerID($0) == "three" } })

                let seen = log.all
                #expect(seen.allSatisfy { $0.topic == "/containers/create" }, "\(seen.map(\.topic))")
                #expect(seen.compactMap(Self.containerID).filter { !$0.hasPrefix("probe-") } == ["one", "two", "three"])
                let one = try #require(seen.first { Self.containerID($0) == "one" })
                #expect(one.namespace == "default")
                #expect(one.event.typeURL == "containerd.events.ContainerCreate")
                let decoded = try Containerd_Events_ContainerCreate(serializedBytes: one.event.value)
                #expect(decoded.image == "docker.io/library/busybox:latest")
                #expect(decoded.runtime.name == "io.containerd.runc.v2")
                #expect(seen.first { Self.containerID($0) == "two" }?.namespace == "elsewhere")
            }
        }
    }

    @Test("Events/Subscribe with a namespace filter sees only that namespace's events")
    func subscribeNamespaceFilter() async throws {
        try await withDaemonAndClient { _, client in
            let containers = Containers(wrapping: client)
            try await withSubscription(client, filters: ["namespace==team-x"]) { log in
                try await log.synchronize({
                    try await Self.publish(client, topic: "/probe", event: Self.event([0]), in: "team-x")
                }, until: { $0.topic == "/probe" })

                _ = try await Self.create(containers, Self.container("in-y"), in: "team-y")
                try await Self.publish(client, topic: "/test/y", event: Self.event([1]), in: "team-y")
                _ = try await Self.create(containers, Self.container("in-x"), in: "team-x")
                try await Self.delete(containers, "in-y", in: "team-y")
                try await Self.publish(client, topic: "/test/done", event: Self.event([2]), in: "team-x")
                #expect(try await log.wait { $0.contains { $0.topic == "/test/done" } })

                let seen = log.all
                #expect(seen.allSatisfy { $0.namespace == "team-x" }, "\(seen.map(\.namespace))")
                #expect(seen.map(\.topic).filter { $0 != "/probe" } == ["/containers/create", "/test/done"])
                #expect(seen.contains { Self.containerID($0) == "in-x" })
            }
        }
    }

    @Test("Events/Publish validates the topic and delivers the envelope with the caller's namespace and the same bytes")
    func publish() async throws {
        try await withDaemonAndClient { _, client in
            let payload = Self.event([0x00, 0xFF, 0x10, 0x80, 0x7F, 0x0A, 0x0D], type: "types.berth.test/Custom")
            await expectRPCError(.invalidArgument, "must start with '/'") {
                try await Self.publish(client, topic: "no/leading/slash", event: payload, in: "default")
            }
            await expectRPCError(.invalidArgument) { try await Self.publish(client, topic: "", event: payload, in: "default") }
            await expectRPCError(.invalidArgument) { try await Self.publish(client, topic: "/", event: payload, in: "default") }
            await expectRPCError(.invalidArgument) { try await Self.publish(client, topic: "/a//b", event: payload, in: "default") }
            await expectRPCError(.invalidArgument, "namespace") { try await Self.publish(client, topic: "/a", event: payload, in: "Bad Name") }
            // containerd checks each topic component is an identifier.
            await expectRPCError(.invalidArgument) { try await Self.publish(client, topic: "/bad topic!", event: payload, in: "default") }

            try await withSubscription(client, filters: [#"topic=="/test/published""#]) { log in
                let before = Date()
                try await log.synchronize({
                    try await Self.publish(client, topic: "/test/published", event: payload, in: "pub-ns")
                }, until: { _ in true })
                let envelope = try #require(log.all.first)
                #expect(envelope.topic == "/test/published")
                #expect(envelope.namespace == "pub-ns")
                #expect(envelope.event.typeURL == "types.berth.test/Custom")
                #expect(envelope.event.value == payload.value)
                #expect(envelope.hasTimestamp)
                #expect(abs(envelope.timestamp.date.timeIntervalSince(before)) < 30)
            }
        }
    }

    @Test("Events/Forward delivers an envelope in another namespace as it was sent")
    func forward() async throws {
        try await withDaemonAndClient { _, client in
            var envelope = APIEnvelope()
            envelope.namespace = "fwd-other"
            envelope.topic = "/test/forwarded"
            envelope.timestamp = Google_Protobuf_Timestamp(seconds: 1_700_000_000, nanos: 123_456_789)
            envelope.event = Self.event([0xDE, 0xAD, 0xBE, 0xEF], type: "types.berth.test/Forwarded")

            var bad = envelope
            bad.namespace = ""
            await expectRPCError(.invalidArgument, "namespace") { try await Self.forward(client, bad) }
            bad = envelope
            bad.topic = "forwarded"
            await expectRPCError(.invalidArgument, "must start with '/'") { try await Self.forward(client, bad) }
            bad = envelope
            bad.clearTimestamp()
            await expectRPCError(.invalidArgument, "timestamp") { try await Self.forward(client, bad) }

            try await withSubscription(client, filters: ["namespace==fwd-other"]) { log in
                // The caller's namespace is default; the envelope's own namespace is what counts.
                try await log.synchronize({ try await Self.forward(client, envelope) }, until: { _ in true })
                let received = try #require(log.all.first)
                #expect(received == envelope, "forwarded unchanged, timestamp included")
            }
        }
    }

    // MARK: Content

    typealias Content = Containerd_Services_Content_V1_Content.Client<HTTP2Transport>

    static func status(_ content: Content, _ ref: String, in namespace: String = "default") async throws -> APIContentStatus {
        var request = Containerd_Services_Content_V1_StatusRequest()
        request.ref = ref
        return try await content.status(request, metadata: ns(namespace)).status
    }

    static func statuses(_ content: Content, _ filters: [String], in namespace: String = "default") async throws -> [APIContentStatus] {
        var request = Containerd_Services_Content_V1_ListStatusesRequest()
        request.filters = filters
        return try await content.listStatuses(request, metadata: ns(namespace)).statuses
    }

    static func abort(_ content: Content, _ ref: String, in namespace: String = "default") async throws {
        var request = Containerd_Services_Content_V1_AbortRequest()
        request.ref = ref
        _ = try await content.abort(request, metadata: ns(namespace))
    }

    static func info(_ content: Content, _ digest: String, in namespace: String = "default") async throws -> APIContentInfo {
        var request = Containerd_Services_Content_V1_InfoRequest()
        request.digest = digest
        return try await content.info(request, metadata: ns(namespace)).info
    }

    /// The messages of one Read: their offsets and the bytes, concatenated.
    static func read(_ content: Content, _ digest: String, offset: Int64, size: Int64) async throws -> (offsets: [Int64], data: Data) {
        var request = Containerd_Services_Content_V1_ReadContentRequest()
        request.digest = digest
        request.offset = offset
        request.size = size
        return try await content.read(request, metadata: ns("default")) { response in
            var offsets: [Int64] = []
            var data = Data()
            for try await message in response.messages {
                offsets.append(message.offset)
                data.append(message.data)
            }
            return (offsets, data)
        }
    }

    static let emptyDigest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    @Test("Content/Write: a ref has one writer at a time, writes must be at the current offset, STAT of a fresh ref is at 0")
    func writeStreamSemantics() async throws {
        try await withDaemonAndClient { _, client in
            let content = Content(wrapping: client)
            // STAT on a fresh ref: nothing written yet.
            let stat = try await withWriteStream(client, metadata: ns("default")) { session in
                try await session.send(writeRequest(.stat, ref: "fresh", total: 1234))
            }
            #expect(stat.action == .stat)
            #expect(stat.offset == 0)
            #expect(stat.total == 1234)
            #expect(stat.digest == Self.emptyDigest)
            #expect(stat.hasStartedAt)
            #expect(try await Self.status(content, "fresh").offset == 0)

            // While one stream holds "busy", a second is refused as unavailable.
            try await withWriteStream(client, metadata: ns("default")) { first in
                let reply = try await first.send(writeRequest(.write, ref: "busy", data: Data("0123456789".utf8)))
                #expect(reply.offset == 10)
                await expectRPCError(.unavailable, "busy", "locked") {
                    try await withWriteStream(client, metadata: ns("default")) { second in
                        try await second.send(writeRequest(.stat, ref: "busy"))
                    }
                }
                // The same ref in another namespace is another ingest.
                let elsewhere = try await withWriteStream(client, metadata: ns("other")) { session in
                    try await session.send(writeRequest(.stat, ref: "busy"))
                }
                #expect(elsewhere.offset == 0)
                // The first stream still works.
                let more = try await first.send(writeRequest(.write, ref: "busy", offset: 10, data: Data("abc".utf8)))
                #expect(more.offset == 13)
            }

            // Once the first stream ends (the daemon notices shortly after), the ref can be resumed.
            var resumed: APIWriteContentResponse?
            for _ in 0..<100 where resumed == nil {
                do {
                    resumed = try await withWriteStream(client, metadata: ns("default")) { session in
                        try await session.send(writeRequest(.stat, ref: "busy"))
                    }
                } catch let error as RPCError where error.code == .unavailable {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            #expect(resumed?.offset == 13, "the ingest resumes where the first stream stopped")

            // A write at an offset other than the current one is out of range.
            await expectRPCError(.outOfRange, "must occur at current offset 13") {
                try await withWriteStream(client, metadata: ns("default")) { session in
                    try await session.send(writeRequest(.write, ref: "busy", offset: 5, data: Data("x".utf8)))
                }
            }
            await expectRPCError(.outOfRange, "must occur at current offset 13") {
                try await withWriteStream(client, metadata: ns("default")) { session in
                    try await session.send(writeRequest(.write, ref: "busy", offset: 20, data: Data("x".utf8)))
                }
            }
            // An offset of 0 restarts the ingest.
            let restarted = try await withWriteStream(client, metadata: ns("default")) { session in
                try await session.send(writeRequest(.write, ref: "busy", offset: 0, data: Data("xy".utf8)))
            }
            #expect(restarted.offset == 2)
            await expectRPCError(.invalidArgument, "reference") {
                try await withWriteStream(client, metadata: ns("default")) { session in
                    try await session.send(writeRequest(.stat, ref: ""))
                }
            }
        }
    }

    @Test("Content/Status and ListStatuses show a partial ingest; Abort removes it")
    func statusAndAbort() async throws {
        try await withDaemonAndClient { daemon, client in
            let content = Content(wrapping: client)
            let blob = try randomBlob(in: daemon.directory, count: 100)
            let partial = try await withWriteStream(client, metadata: ns("default")) { session in
                try await session.send(writeRequest(.write, ref: "partial", data: blob.data.prefix(40), total: 100, expected: blob.digest))
            }
            #expect(partial.offset == 40)
            _ = try await withWriteStream(client, metadata: ns("default")) { session in
                try await session.send(writeRequest(.write, ref: "partial-2", data: Data([1, 2, 3])))
            }

            let status = try await Self.status(content, "partial")
            #expect(status.ref == "partial")
            #expect(status.offset == 40)
            #expect(status.total == 100)
            #expect(status.hasStartedAt && status.hasUpdatedAt)

            let listed = try await Self.statuses(content, [#"ref=="partial""#])
            #expect(listed.map(\.ref) == ["partial"])
            #expect(listed.first?.offset == 40)
            #expect(listed.first?.total == 100)
            #expect(listed.first?.expected == blob.digest)
            #expect(try await Self.statuses(content, []).map(\.ref).sorted() == ["partial", "partial-2"])
            #expect(try await Self.statuses(content, ["ref~=^partial-"]).map(\.ref) == ["partial-2"])
            #expect(try await Self.statuses(content, [], in: "other").isEmpty)
            await expectRPCError(.notFound, "partial") { try await Self.status(content, "partial", in: "other") }

            // The ingest resumes where it stopped and commits.
            let committed = try await withWriteStream(client, metadata: ns("default")) { session in
                let stat = try await session.send(writeRequest(.stat, ref: "partial"))
                #expect(stat.offset == 40)
                return try await session.send(writeRequest(.commit, ref: "partial", offset: 40, data: blob.data.suffix(60), total: 100))
            }
            #expect(committed.digest == blob.digest)
            #expect(try await Self.info(content, blob.digest).size == 100)
            await expectRPCError(.notFound) { try await Self.status(content, "partial") }

            try await Self.abort(content, "partial-2")
            await expectRPCError(.notFound, "partial-2") { try await Self.status(content, "partial-2") }
            #expect(try await Self.statuses(content, [#"ref=="partial-2""#]).isEmpty)
            await expectRPCError(.notFound) { try await Self.abort(content, "partial-2") }
            await expectRPCError(.notFound) { try await Self.abort(content, "never-written") }
        }
    }

    @Test("Content/Read returns exactly the range asked for, and refuses an offset past the end")
    func readRanges() async throws {
        try await withDaemonAndClient { daemon, client in
            let content = Content(wrapping: client)
            let size = (3 << 20) + 123
            let blob = try randomBlob(in: daemon.directory, count: size)
            #expect(try await writeBlob(client, metadata: ns("default"), ref: "read-me", data: blob.data, expected: blob.digest) == blob.digest)

            let whole = try await Self.read(content, blob.digest, offset: 0, size: 0)
            #expect(whole.data == blob.data)
            #expect(whole.offsets.first == 0)

            let middle = try await Self.read(content, blob.digest, offset: 1_000_000, size: 2_000_000)
            #expect(middle.data.count == 2_000_000)
            #expect(middle.data == blob.data.subdata(in: 1_000_000..<3_000_000))
            #expect(middle.offsets.first == 1_000_000)
            // Each message says where its bytes start.
            #expect(zip(middle.offsets, middle.offsets.dropFirst()).allSatisfy { $0 < $1 })

            let small = try await Self.read(content, blob.digest, offset: 7, size: 5)
            #expect(small.data == blob.data.subdata(in: 7..<12))
            #expect(small.offsets == [7])

            let tail = try await Self.read(content, blob.digest, offset: Int64(size - 10), size: 100)
            #expect(tail.data == blob.data.suffix(10), "a size past the end reads to the end")

            let atEnd = try await Self.read(content, blob.digest, offset: Int64(size), size: 0)
            #expect(atEnd.data.isEmpty)

            await expectRPCError(.outOfRange, "read past") { try await Self.read(content, blob.digest, offset: Int64(size) + 1, size: 0) }
            // containerd reads a negative offset as 0 (contentserver.go Read).
            let negative = try await Self.read(content, blob.digest, offset: -1, size: 10)
            #expect(negative.data == blob.data.prefix(10))
            // offset + size overflows Int64: the rest of the blob, not a crash.
            let huge = try await Self.read(content, blob.digest, offset: 1, size: .max)
            #expect(huge.data == blob.data.dropFirst())
            await expectRPCError(.notFound) { try await Self.read(content, Self.emptyDigest, offset: 0, size: 0) }
            await expectRPCError(.invalidArgument) { try await Self.read(content, "sha256:short", offset: 0, size: 0) }
        }
    }

    // MARK: Leases

    typealias Leases = Containerd_Services_Leases_V1_Leases.Client<HTTP2Transport>

    static func resource(_ id: String, _ type: String) -> Containerd_Services_Leases_V1_Resource {
        var resource = Containerd_Services_Leases_V1_Resource()
        resource.id = id
        resource.type = type
        return resource
    }

    static func createLease(_ leases: Leases, _ id: String, in namespace: String = "default") async throws {
        var request = Containerd_Services_Leases_V1_CreateRequest()
        request.id = id
        _ = try await leases.create(request, metadata: ns(namespace))
    }

    static func deleteLease(_ leases: Leases, _ id: String, sync: Bool, in namespace: String = "default") async throws {
        var request = Containerd_Services_Leases_V1_DeleteRequest()
        request.id = id
        request.sync = sync
        _ = try await leases.delete(request, metadata: ns(namespace))
    }

    static func addResource(_ leases: Leases, _ lease: String, _ resource: Containerd_Services_Leases_V1_Resource,
                            in namespace: String = "default") async throws {
        var request = Containerd_Services_Leases_V1_AddResourceRequest()
        request.id = lease
        request.resource = resource
        _ = try await leases.addResource(request, metadata: ns(namespace))
    }

    static func deleteResource(_ leases: Leases, _ lease: String, _ resource: Containerd_Services_Leases_V1_Resource,
                               in namespace: String = "default") async throws {
        var request = Containerd_Services_Leases_V1_DeleteResourceRequest()
        request.id = lease
        request.resource = resource
        _ = try await leases.deleteResource(request, metadata: ns(namespace))
    }

    static func resources(_ leases: Leases, _ lease: String, in namespace: String = "default") async throws -> [Containerd_Services_Leases_V1_Resource] {
        var request = Containerd_Services_Leases_V1_ListResourcesRequest()
        request.id = lease
        return try await leases.listResources(request, metadata: ns(namespace)).resources
    }

    @Test("Leases: AddResource, ListResources and DeleteResource, and what AddResource refuses")
    func leaseResources() async throws {
        try await withDaemonAndClient { _, client in
            let leases = Leases(wrapping: client)
            try await Self.createLease(leases, "hold")
            let digest = "sha256:" + String(repeating: "ab", count: 32)
            try await Self.addResource(leases, "hold", Self.resource(digest, "content"))
            try await Self.addResource(leases, "hold", Self.resource("pull-ref", "ingests"))
            try await Self.addResource(leases, "hold", Self.resource("layer-key", "snapshots/overlayfs"))
            try await Self.addResource(leases, "hold", Self.resource(digest, "content"))  // idempotent

            let all = try await Self.resources(leases, "hold")
            #expect(all.map { "\($0.type) \($0.id)" } == ["content \(digest)", "ingests pull-ref", "snapshots/overlayfs layer-key"])

            try await Self.deleteResource(leases, "hold", Self.resource("pull-ref", "ingests"))
            try await Self.deleteResource(leases, "hold", Self.resource("never-added", "ingests"))  // nothing to do
            #expect(try await Self.resources(leases, "hold").map(\.type) == ["content", "snapshots/overlayfs"])

            await expectRPCError(.invalidArgument, "content/extra") { try await Self.addResource(leases, "hold", Self.resource(digest, "content/extra")) }
            await expectRPCError(.invalidArgument, "snapshot") { try await Self.addResource(leases, "hold", Self.resource("k", "snapshots")) }
            await expectRPCError(.invalidArgument, "sha256:nothex") { try await Self.addResource(leases, "hold", Self.resource("sha256:nothex", "content")) }
            await expectRPCError(.invalidArgument) { try await Self.addResource(leases, "hold", Self.resource("not-a-digest", "content")) }
            await expectRPCError(.notFound, "missing") { try await Self.addResource(leases, "missing", Self.resource(digest, "content")) }
            await expectRPCError(.notFound, "missing") { try await Self.resources(leases, "missing") }
            await expectRPCError(.notFound, "missing") { try await Self.deleteResource(leases, "missing", Self.resource(digest, "content")) }
            await expectRPCError(.notFound, "hold") { try await Self.resources(leases, "hold", in: "other-ns") }
            #expect(try await Self.resources(leases, "hold").map(\.type) == ["content", "snapshots/overlayfs"], "refusals add nothing")

            // containerd: a type it does not know is NotImplemented; a snapshot type with more than
            // one '/' is InvalidArgument (metadata/leases.go parseLeaseResource).
            await expectRPCError(.unimplemented, "not supported") { try await Self.addResource(leases, "hold", Self.resource("x", "images")) }
            await expectRPCError(.invalidArgument) { try await Self.addResource(leases, "hold", Self.resource("k", "snapshots/a/b")) }
        }
    }

    @Test("Leases/Delete with sync collects content only that lease held")
    func leaseDeleteSync() async throws {
        try await withDaemonAndClient { daemon, client in
            let leases = Leases(wrapping: client)
            let content = Content(wrapping: client)
            try await Self.createLease(leases, "pull")
            try await Self.createLease(leases, "unrelated")
            let blob = try randomBlob(in: daemon.directory, count: 4096)
            let written = try await writeBlob(client, metadata: ns("default", lease: "pull"), ref: "leased", data: blob.data, expected: blob.digest)
            #expect(written == blob.digest)
            #expect(try await Self.resources(leases, "pull").map { "\($0.type) \($0.id)" } == ["content \(blob.digest)"],
                    "the commit moves the lease from the ingest to the blob")

            // A collection while the lease stands keeps the blob.
            try await Self.deleteLease(leases, "unrelated", sync: true)
            #expect(try await Self.info(content, blob.digest).size == 4096)

            try await Self.deleteLease(leases, "pull", sync: true)
            await expectRPCError(.notFound, "not found") { try await Self.info(content, blob.digest) }
            await expectRPCError(.notFound) { try await Self.read(content, blob.digest, offset: 0, size: 0) }
            await expectRPCError(.notFound, "pull") { try await Self.resources(leases, "pull") }
            await expectRPCError(.notFound, "pull") { try await Self.deleteLease(leases, "pull", sync: true) }
            // Writing under a lease that does not exist fails.
            await expectRPCError(.notFound, "pull") {
                try await writeBlob(client, metadata: ns("default", lease: "pull"), ref: "leased-again", data: blob.data)
            }
        }
    }

    // MARK: Namespaces

    @Test("Namespaces/Update with a labels.<key> mask changes only that label; Get refuses an invalid name")
    func namespaceUpdateMask() async throws {
        try await withDaemonAndClient { _, client in
            let namespaces = Containerd_Services_Namespaces_V1_Namespaces.Client(wrapping: client)
            func get(_ name: String) async throws -> [String: String] {
                var request = Containerd_Services_Namespaces_V1_GetNamespaceRequest()
                request.name = name
                return try await namespaces.get(request, metadata: ns("default")).namespace.labels
            }
            func update(_ name: String, _ labels: [String: String], _ paths: [String]) async throws {
                var request = Containerd_Services_Namespaces_V1_UpdateNamespaceRequest()
                request.namespace.name = name
                request.namespace.labels = labels
                request.updateMask = Google_Protobuf_FieldMask(protoPaths: paths)
                _ = try await namespaces.update(request, metadata: ns("default"))
            }
            var create = Containerd_Services_Namespaces_V1_CreateNamespaceRequest()
            create.namespace.name = "team-a"
            create.namespace.labels = ["a": "1", "b": "2", "c": "3"]
            _ = try await namespaces.create(create, metadata: ns("default"))

            try await update("team-a", ["a": "10", "b": "20"], ["labels.a"])
            #expect(try await get("team-a") == ["a": "10", "b": "2", "c": "3"])
            try await update("team-a", ["d": "4"], ["labels.d", "labels.c"])
            #expect(try await get("team-a") == ["a": "10", "b": "2", "d": "4"], "a masked label missing from the request is removed")
            await expectRPCError(.invalidArgument, "cannot update", "name") { try await update("team-a", [:], ["name"]) }
            #expect(try await get("team-a") == ["a": "10", "b": "2", "d": "4"])

            await expectRPCError(.invalidArgument, "Bad Name") { try await get("Bad Name") }
            await expectRPCError(.invalidArgument) { try await get("-leading") }
            await expectRPCError(.invalidArgument) { try await get(String(repeating: "n", count: 77)) }
        }
    }
}
