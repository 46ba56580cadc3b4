@testable import BerthMetadata
import Foundation
import Testing

/// The labels columns: read and written without Foundation; what JSONEncoder wrote (rows of
/// earlier versions) reads the same.
@Suite struct LabelsCodecTests {
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
            #expect(Codec.labels(text) == labels, "\(text)")
            #expect(Codec.labels(Codec.encode(labels)) == labels)
            // The same document as JSONEncoder's, but for its escaped slashes.
            #expect(Codec.encode(labels) == text.replacingOccurrences(of: "\\/", with: "/"), "\(text)")
        }
    }

    @Test func readsEscapesAndSpacing() {
        #expect(Codec.labels(#" { "a" : "x\/y\u00e9\ud83d\ude00" , "b":"" } "#) == ["a": "x/yé😀", "b": ""])
    }

    @Test func anythingButAnObjectOfStringsReadsAsNoLabels() {
        for text in [#"{"a":1}"#, #"{"a":"x""#, #"["a"]"#, #"{"a":"x"} x"#, ""] {
            #expect(Codec.labels(text) == [:], "\(text)")
        }
    }
}
