/// String helpers for the long-running shim, written over UTF-8 bytes.
///
/// A running shim's memory is mostly the code pages it has touched, and the kernel maps code 64 KiB
/// at a time. `String.contains(_:)` with a string argument lives in _StringProcessing, and
/// interpolating an integer goes through the standard library's generic formatting: each pulled
/// in pages that nothing else in a running shim uses (measured: six 64 KiB windows between them).
/// These few lines sit with the shim's own code instead.
extension String {
    /// Whether `needle` occurs in this string, comparing UTF-8 bytes.
    func containsBytes(_ needle: String) -> Bool {
        firstByteOffset(of: needle) != nil
    }

    /// The string with every occurrence of `target` replaced by `replacement`, comparing UTF-8 bytes.
    func replacingBytes(_ target: String, with replacement: String) -> String {
        let haystack = Array(utf8)
        let target = Array(target.utf8)
        guard !target.isEmpty else { return self }
        var result: [UInt8] = []
        result.reserveCapacity(haystack.count)
        var index = 0
        while index < haystack.count {
            if index + target.count <= haystack.count, haystack[index..<index + target.count].elementsEqual(target) {
                result.append(contentsOf: replacement.utf8)
                index += target.count
            } else {
                result.append(haystack[index])
                index += 1
            }
        }
        return String(decoding: result, as: UTF8.self)
    }

    private func firstByteOffset(of needle: String) -> Int? {
        let haystack = Array(utf8)
        let needle = Array(needle.utf8)
        guard needle.count <= haystack.count else { return nil }
        if needle.isEmpty { return 0 }
        for start in 0...(haystack.count - needle.count) where haystack[start..<start + needle.count].elementsEqual(needle) {
            return start
        }
        return nil
    }
}

/// `value` in decimal.
func decimal(_ value: Int64) -> String {
    var magnitude = value.magnitude
    var digits = [UInt8](repeating: UInt8(ascii: "-"), count: 20)
    var start = digits.count
    repeat {
        start -= 1
        digits[start] = UInt8(ascii: "0") + UInt8(magnitude % 10)
        magnitude /= 10
    } while magnitude > 0
    if value < 0 { start -= 1 }
    return String(decoding: digits[start...], as: UTF8.self)
}
