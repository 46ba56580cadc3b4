import BerthCore
import BerthSystem
import BerthTestSupport
import Foundation
import Testing
@testable import BerthArchive

/// Apply throughput on an image-like layer: ~20k small files in ~400 directories plus a few large binaries,
/// gzip-compressed by GNU tar, against `tar -xzf` of the same file. Prints numbers; never fails on time.
/// Opt in with BERTH_ARCHIVE_BENCH=1 (it takes about a minute).
@Suite("Apply benchmark")
struct ApplyBenchmark {
    static let enabled = ProcessInfo.processInfo.environment["BERTH_ARCHIVE_BENCH"] == "1"

    @Test("apply throughput vs tar -xzf", .enabled(if: enabled))
    func throughput() throws {
        let scratch = try Scratch("bench")
        defer { scratch.cleanup() }
        let source = try scratch.sub("source")
        // Small files take slices of a real binary so they compress like real content.
        _ = try sh("""
            cd \(source) && python3 - <<'PY'
            import os, random
            random.seed(7)
            blob = open('/opt/swift/usr/lib/libLTO.so.21.0', 'rb').read()[:16 << 20]
            for d in range(400):
                path = f'usr/share/pkg{d // 20}/dir{d}'
                os.makedirs(path, exist_ok=True)
                for f in range(50):
                    size = random.choice([120, 600, 1500, 3000, 7000, 16000])
                    start = random.randrange(0, len(blob) - size)
                    with open(f'{path}/file{f}.txt', 'wb') as out:
                        out.write(blob[start:start + size])
            PY
            mkdir -p usr/lib && head -c 60000000 /opt/swift/usr/lib/libclang.so.21.0.0 > usr/lib/libclang.so \
            && head -c 50000000 /opt/swift/usr/lib/liblldb.so.21.0.0 > usr/lib/liblldb.so \
            && head -c 40000000 /opt/swift/usr/lib/libLTO.so.21.0 > usr/lib/libLTO.so
            """)
        let layer = "\(scratch.path)/layer.tar.gz"
        _ = try sh("tar --numeric-owner -C \(source) -czf \(layer) .")
        let raw = "\(scratch.path)/layer.tar"
        _ = try sh("gzip -dc \(layer) > \(raw)")
        let compressed = Double(FileSystem.size(of: layer)!) / 1e6
        let uncompressed = Double(FileSystem.size(of: raw)!) / 1e6
        print("benchmark layer: \(String(format: "%.1f", uncompressed)) MB tar, \(String(format: "%.1f", compressed)) MB gzip, 20000 small files + 3 large")

        func time(_ body: () throws -> Void) rethrows -> Double {
            let start = ContinuousClock.now
            try body()
            let elapsed = ContinuousClock.now - start
            return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        }
        _ = try sh("sync")
        var results: [String: [Double]] = [:]
        for round in 0..<3 {
            let berth = try scratch.sub("berth\(round)")
            results["berth gzip", default: []].append(try time { try applyFile(layer, .gzip, to: berth) })
            let berthRaw = try scratch.sub("berthraw\(round)")
            results["berth tar", default: []].append(try time { try applyFile(raw, .uncompressed, to: berthRaw) })
            let tar = try scratch.sub("tar\(round)")
            results["tar -xzf", default: []].append(try time { _ = try sh("tar --numeric-owner -xzf \(layer) -C \(tar)") })
            let tarRaw = try scratch.sub("tarraw\(round)")
            results["tar -xf", default: []].append(try time { _ = try sh("tar --numeric-owner -xf \(raw) -C \(tarRaw)") })
            if round == 0 {
                var expected = try describeTree(tar)
                var actual = try describeTree(berth)
                expected.removeValue(forKey: ".")
                actual.removeValue(forKey: ".")
                expectSameTrees(expected, actual)
            }
            _ = try sh("rm -rf \(berth) \(berthRaw) \(tar) \(tarRaw) && sync")
        }
        for name in ["berth gzip", "tar -xzf", "berth tar", "tar -xf"] {
            let best = results[name]!.min()!
            print("benchmark \(name): best \(String(format: "%.3f", best)) s of \(results[name]!.map { String(format: "%.3f", $0) }), \(String(format: "%.0f", uncompressed / best)) MB/s uncompressed")
        }
    }
}
