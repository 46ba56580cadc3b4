@testable import BerthMetadata
import Foundation
import Testing

/// The labels reader against what Foundation's JSON writes and reads.
@Suite struct LabelsJSONTests {
    @Test func readsWhatTheEncoderWrites() throws {
        let samples: [[String: String]] = [
            [:],
            ["containerd.io/gc.ref.content.l.0": "sha256:abc", "io.containerd.image.name": "docker.io/library/busybox:1"],
            ["quote\"back\\slash": "tab\tnewline\ncr\r", "ctl": "\u{01}\u{1F}", "unicode": "naïve 😀 ✓", "empty": ""],
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for labels in samples {
            let text = String(decoding: try encoder.encode(labels), as: UTF8.self)
            #expect(LabelsJSON.decode(text) == labels, "\(text)")
            #expect(Codec.labels(Codec.encode(labels)) == labels)
        }
    }

    @Test func readsEscapesAndSpacing() {
        #expect(LabelsJSON.decode(#" { "a" : "x\/y\u00e9\ud83d\ude00" , "b":"" } "#) == ["a": "x/yé😀", "b": ""])
    }

    @Test func leavesOtherShapesToTheFallback() {
        for text in [#"{"a":1}"#, #"{"a":"x""#, #"["a"]"#, #"{"a":"x"} x"#, #"{"a":"\ud83d"}"#, #"{"a":"\q"}"#, "{\"a\":\"\u{01}\"}"] {
            #expect(LabelsJSON.decode(text) == nil, "\(text)")
        }
    }
}
