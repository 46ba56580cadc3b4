import BerthCore
import Foundation
import Testing

@Suite("BerthError")
struct BerthErrorTests {
    struct Plain: Error, CustomStringConvertible { var description: String { "disk on fire" } }

    @Test func factoriesSetCodeAndMessage() {
        #expect(BerthError.notFound("image \"x\": not found").code == .notFound)
        #expect(BerthError.invalidArgument("m").code == .invalidArgument)
        #expect(BerthError.alreadyExists("m").code == .alreadyExists)
        #expect(BerthError.failedPrecondition("m").code == .failedPrecondition)
        #expect(BerthError.unavailable("m").code == .unavailable)
        #expect(BerthError.unimplemented("m").code == .unimplemented)
        #expect(BerthError.internal("m").code == .internal)
        #expect(BerthError.notFound("image \"x\": not found").description == "image \"x\": not found")
    }

    @Test func wrapKeepsABerthError() {
        let original = BerthError.notFound("lease \"l\": not found")
        let wrapped = BerthError.wrap(original, "context")
        #expect(wrapped.code == .notFound)
        #expect(wrapped.message == original.message)
    }

    @Test func wrapTurnsOtherErrorsIntoInternal() {
        let wrapped = BerthError.wrap(Plain(), "metadata database")
        #expect(wrapped.code == .internal)
        #expect(wrapped.message == "metadata database")
        #expect(wrapped.description == "metadata database: disk on fire")
    }
}

@Suite("Descriptor")
struct DescriptorTests {
    static let digest = try! Digest(parsing: "sha256:" + String(repeating: "c", count: 64))

    @Test func encodesOCIFieldNamesAndOmitsEmptyAnnotations() throws {
        let descriptor = Descriptor(mediaType: MediaType.ociManifest, digest: Self.digest, size: 7)
        let object = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(descriptor)) as? [String: Any]
        #expect(object?.keys.sorted() == ["digest", "mediaType", "size"])
        #expect(object?["digest"] as? String == Self.digest.description)
        #expect(object?["mediaType"] as? String == MediaType.ociManifest)
        #expect(object?["size"] as? Int == 7)
    }

    @Test func roundTripsWithPlatformAndAnnotations() throws {
        var platform = Platform(os: "linux", architecture: "arm64", variant: "v8")
        platform.osVersion = "10.0"
        platform.osFeatures = ["sse4"]
        let descriptor = Descriptor(mediaType: MediaType.ociManifest, digest: Self.digest, size: 7,
                                    annotations: ["org.opencontainers.image.ref.name": "1"],
                                    urls: ["https://example.invalid/blob"], platform: platform)
        let data = try JSONEncoder().encode(descriptor)
        #expect(String(decoding: data, as: UTF8.self).contains(#""os.version":"10.0""#))
        #expect(try JSONDecoder().decode(Descriptor.self, from: data) == descriptor)
    }

    @Test func decodesMissingOptionalFields() throws {
        let data = Data(#"{"digest":"\#(Self.digest)"}"#.utf8)
        let descriptor = try JSONDecoder().decode(Descriptor.self, from: data)
        #expect(descriptor.mediaType == "")
        #expect(descriptor.size == 0)
        #expect(descriptor.annotations.isEmpty)
        #expect(descriptor.platform == nil)
    }

    @Test func rejectsAnInvalidDigest() {
        let data = Data(#"{"digest":"sha256:nothex","size":1}"#.utf8)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Descriptor.self, from: data) }
    }

    @Test func mediaTypeClassification() {
        #expect(MediaType.isIndex(MediaType.ociIndex))
        #expect(MediaType.isIndex(MediaType.dockerManifestList))
        #expect(!MediaType.isIndex(MediaType.ociManifest))
        #expect(MediaType.isManifest(MediaType.ociManifest))
        #expect(MediaType.isManifest(MediaType.dockerManifest))
        #expect(!MediaType.isManifest(MediaType.ociConfig))
        #expect(!MediaType.isManifest(MediaType.ociLayerGzip))
    }
}

@Suite("Timestamp")
struct TimestampTests {
    @Test func nanosecondRoundTrip() {
        let t = Timestamp(seconds: 1_700_000_000, nanos: 123_456_789)
        #expect(t.nanosecondsSinceEpoch == 1_700_000_000_123_456_789)
        #expect(Timestamp(nanosecondsSinceEpoch: t.nanosecondsSinceEpoch) == t)
    }

    @Test func ordering() {
        let a = Timestamp(seconds: 10, nanos: 999_999_999)
        let b = Timestamp(seconds: 11, nanos: 0)
        #expect(a < b)
        #expect(!(b < a))
        #expect(Timestamp(seconds: 11, nanos: 1) > b)
    }

    @Test func nowIsAfter2020() {
        #expect(Timestamp.now.seconds > 1_577_836_800)
    }

    @Test("RFC 3339 as Go writes it (gc.expire labels)", arguments: [
        ("1970-01-01T00:00:00Z", Timestamp(seconds: 0, nanos: 0)),
        ("1969-12-31T23:59:59Z", Timestamp(seconds: -1, nanos: 0)),
        ("2026-12-02T20:15:00Z", Timestamp(seconds: 1_796_242_500, nanos: 0)),
        ("2026-12-02t20:15:00z", Timestamp(seconds: 1_796_242_500, nanos: 0)),
        ("2000-02-29T23:59:59.5+01:30", Timestamp(seconds: 951_863_399, nanos: 500_000_000)),
        ("2024-03-01T00:00:00-05:00", Timestamp(seconds: 1_709_269_200, nanos: 0)),
        ("2026-12-02T20:15:00.123456789123Z", Timestamp(seconds: 1_796_242_500, nanos: 123_456_789)),
    ])
    func parsesRFC3339(text: String, expected: Timestamp) {
        #expect(Timestamp(rfc3339: text) == expected)
    }

    @Test("not RFC 3339", arguments: ["", "2026-12-02", "2026-12-02T20:15:00", "2026-13-02T20:15:00Z",
                                       "2026-12-02T20:15:00.Z", "2026-12-02T20:15:00+0100", "2026-12-02T20:15:00Zx",
                                       "tomorrow", "2026-12-02 20:15:00Z"])
    func rejectsOtherText(text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }
}
