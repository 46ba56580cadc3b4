/// containerd's filter language, as used by every `List` call.
///
/// One filter string is a comma-separated conjunction of selectors,
/// `<fieldpath>[<op><value>]`, with operators `==`, `!=` and `~=` (regular expression, unanchored);
/// a bare field path tests presence. Field paths are dot-separated fields, each a name or a
/// double-quoted string (`labels."io.example/k"`). Values are bare words or double-quoted; regex
/// values may also be quoted with `/…/` or `|…|`. Several filter strings are a disjunction, and
/// no filter at all matches everything.
public struct Filter: Sendable {
    /// Any of these conjunctions must hold.
    let alternatives: [[Selector]]

    /// Parses `filters` (each one string of `List`'s repeated `filters` field).
    /// Throws `invalidArgument` naming the filter and the position of the defect.
    public init(parsing filters: [String]) throws(BerthError) {
        var alternatives: [[Selector]] = []
        for text in filters {
            if text.isEmpty { alternatives.append([]); continue }
            var parser = FilterParser(text)
            alternatives.append(try parser.parseSelectors())
        }
        self.alternatives = alternatives
    }

    public static let all = Filter(alternatives: [])

    init(alternatives: [[Selector]]) { self.alternatives = alternatives }

    public var matchesEverything: Bool { alternatives.isEmpty || alternatives.contains { $0.isEmpty } }

    public func matches(_ object: some Filterable) -> Bool {
        if alternatives.isEmpty { return true }
        return alternatives.contains { selectors in selectors.allSatisfy { $0.matches(object) } }
    }
}

/// An object a ``Filter`` can look into.
public protocol Filterable {
    /// The value at `path` (e.g. `["labels", "k"]`), or nil if the object has no such field.
    func field(_ path: [String]) -> String?
}

extension Filterable {
    /// Looks up `labels.<rest>` where the rest of the path is joined with dots, as containerd does.
    public static func label(_ path: ArraySlice<String>, in labels: [String: String]) -> String? {
        guard !path.isEmpty else { return nil }
        return labels[path.joined(separator: ".")]
    }
}

struct Selector: Sendable {
    enum Operator: Sendable { case present, equal, notEqual, matches }
    let fieldpath: [String]
    let op: Operator
    let value: String
    let regex: CompiledRegex?

    /// As containerd: a missing field reads as the empty string for `!=` and `~=`.
    func matches(_ object: some Filterable) -> Bool {
        let actual = object.field(fieldpath)
        switch op {
        case .present: return actual != nil
        case .equal: return actual == value
        case .notEqual: return (actual ?? "") != value
        case .matches: return regex?.matches(actual ?? "") ?? false
        }
    }
}

/// A compiled regular expression; Swift's `Regex` is not `Sendable`, but matching does not mutate it.
final class CompiledRegex: @unchecked Sendable {
    private let regex: Regex<AnyRegexOutput>
    init(_ pattern: String) throws { regex = try Regex(pattern) }
    func matches(_ text: String) -> Bool { text.contains(regex) }
}

struct FilterParser {
    private let input: [Unicode.Scalar]
    private let text: String
    private var position = 0

    init(_ text: String) {
        self.text = text
        self.input = Array(text.unicodeScalars)
    }

    mutating func parseSelectors() throws(BerthError) -> [Selector] {
        var selectors = [try parseSelector()]
        while true {
            skipSpaces()
            guard let next = peek() else { return selectors }
            guard next == "," else { throw error("unexpected input: \(next)") }
            position += 1
            selectors.append(try parseSelector())
        }
    }

    private mutating func parseSelector() throws(BerthError) -> Selector {
        var path = [try parseField()]
        while true {
            skipSpaces()
            guard peek() == "." else { break }
            position += 1
            path.append(try parseField())
        }
        skipSpaces()
        guard let next = peek(), next != "," else {
            return Selector(fieldpath: path, op: .present, value: "", regex: nil)
        }
        let op = try parseOperator()
        let value = try parseValue(allowRegexQuotes: op == .matches)
        var regex: CompiledRegex?
        if op == .matches {
            do { regex = try CompiledRegex(value) } catch {
                throw BerthError.invalidArgument("filter \(quoted(text)): invalid regular expression \(quoted(value))")
            }
        }
        return Selector(fieldpath: path, op: op, value: value, regex: regex)
    }

    private mutating func parseField() throws(BerthError) -> String {
        skipSpaces()
        guard let first = peek() else { throw error("expected field or quoted") }
        if first == "\"" { return try parseQuoted("\"") }
        guard isFieldScalar(first) else { throw error("expected field or quoted") }
        let start = position
        while let c = peek(), isFieldScalar(c) { position += 1 }
        return String(String.UnicodeScalarView(input[start..<position]))
    }

    private mutating func parseOperator() throws(BerthError) -> Selector.Operator {
        skipSpaces()
        let start = position
        while let c = peek(), c == "=" || c == "!" || c == "~" { position += 1 }
        switch String(String.UnicodeScalarView(input[start..<position])) {
        case "==": return .equal
        case "!=": return .notEqual
        case "~=": return .matches
        case "": position = start; throw error(#"expected an operator ("=="|"!="|"~=")"#)
        case let other: position = start; throw error("unsupported operator \(quoted(other))")
        }
    }

    private mutating func parseValue(allowRegexQuotes: Bool) throws(BerthError) -> String {
        skipSpaces()
        guard let first = peek() else { throw error("expected value or quoted") }
        if first == "\"" { return try parseQuoted("\"") }
        if first == "/" || first == "|" {
            guard allowRegexQuotes else { throw error("invalid quote encountered") }
            return try parseQuoted(first)
        }
        let start = position
        while let c = peek(), c != ",", !c.properties.isWhitespace { position += 1 }
        guard position > start else { throw error("expected value or quoted") }
        return String(String.UnicodeScalarView(input[start..<position]))
    }

    /// Reads a literal delimited by `quote`, with Go-style escapes.
    private mutating func parseQuoted(_ quote: Unicode.Scalar) throws(BerthError) -> String {
        position += 1
        var out = String.UnicodeScalarView()
        while true {
            guard let c = peek(), c != "\n" else { throw error("quoted literal not terminated") }
            position += 1
            if c == quote { return String(out) }
            guard c == "\\" else { out.append(c); continue }
            guard let e = peek() else { throw error("quoted literal not terminated") }
            position += 1
            switch e {
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "v": out.append("\u{0B}")
            case "\\": out.append("\\")
            case quote: out.append(quote)
            case "0"..."7": out.append(try parseOctal(first: e))
            case "x": out.append(try parseHex(count: 2))
            case "u": out.append(try parseHex(count: 4))
            case "U": out.append(try parseHex(count: 8))
            default: throw error("illegal escape sequence")
            }
        }
    }

    private mutating func parseHex(count: Int) throws(BerthError) -> Unicode.Scalar {
        guard position + count <= input.count,
              input[position..<position + count].allSatisfy({ $0.properties.isASCIIHexDigit }),
              let value = UInt32(String(String.UnicodeScalarView(input[position..<position + count])), radix: 16),
              let scalar = Unicode.Scalar(value)
        else { throw error("illegal numeric escape sequence") }
        position += count
        return scalar
    }

    /// `\NNN`: exactly three octal digits (the first already read), at most 255, as in Go.
    private mutating func parseOctal(first: Unicode.Scalar) throws(BerthError) -> Unicode.Scalar {
        guard position + 2 <= input.count,
              input[position..<position + 2].allSatisfy({ $0 >= "0" && $0 <= "7" }),
              let value = UInt32(String(first) + String(String.UnicodeScalarView(input[position..<position + 2])), radix: 8),
              value <= 255, let scalar = Unicode.Scalar(value)
        else { throw error("illegal numeric escape sequence") }
        position += 2
        return scalar
    }

    private func peek() -> Unicode.Scalar? { position < input.count ? input[position] : nil }

    private mutating func skipSpaces() {
        while let c = peek(), c.properties.isWhitespace { position += 1 }
    }

    private func isFieldScalar(_ c: Unicode.Scalar) -> Bool {
        c == "_" || (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9")
    }

    private func error(_ message: String) -> BerthError {
        .invalidArgument("filter \(quoted(text)): parse error at position \(position): \(message)")
    }
}
