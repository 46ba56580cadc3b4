import BerthContent
import BerthCore
import GRDB

extension MetadataStore {
    public func createNamespace(_ namespace: Namespace, labels: [String: String]) async throws(BerthError) -> NamespaceInfo {
        try Labels.validate(labels)
        return try await write { db in
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM namespaces WHERE name = ?"), arguments: [namespace.name]) == true {
                throw BerthError.alreadyExists("namespace \(namespace): already exists")
            }
            let now = Timestamp.now.nanosecondsSinceEpoch
            try db.cachedStatement(sql: "INSERT INTO namespaces (name, labels, created_at, updated_at) VALUES (?, ?, ?, ?)").execute(
                           arguments: [namespace.name, Codec.encode(labels), now, now])
            return NamespaceInfo(name: namespace.name, labels: labels)
        }
    }

    public func namespace(_ namespace: Namespace) async throws(BerthError) -> NamespaceInfo {
        try cachedRead(.namespace(namespace.name)) { db in
            guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT labels FROM namespaces WHERE name = ?"), arguments: [namespace.name]) else {
                throw BerthError.notFound("namespace \(namespace): not found")
            }
            return NamespaceInfo(name: namespace.name, labels: Codec.labels(row["labels"]))
        }
    }

    public func namespaces() async throws(BerthError) -> [NamespaceInfo] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT name, labels FROM namespaces ORDER BY name")).map {
                NamespaceInfo(name: $0["name"], labels: Codec.labels($0["labels"]))
            }
        }
    }

    /// Replaces labels (no paths), or the labels the paths name (`labels`, `labels.<key>`).
    /// A namespace that does not exist yet is created, as containerd does.
    public func updateNamespace(_ namespace: Namespace, labels updated: [String: String], paths: [String]) async throws(BerthError) -> NamespaceInfo {
        try Labels.validate(updated)
        for path in paths where !(path == "labels" || path.hasPrefix("labels.")) {
            throw .invalidArgument("namespace \(namespace): cannot update \(quoted(path)) field")
        }
        return try await write { db in
            try Self.ensureNamespace(db, namespace)
            var labels = Codec.labels(try String.fetchOne(db.cachedStatement(sql: "SELECT labels FROM namespaces WHERE name = ?"), arguments: [namespace.name]))
            if paths.isEmpty {
                labels = updated
            } else {
                for path in paths { _ = applyMapPath(path, prefix: "labels", from: updated, to: &labels) }
            }
            try Labels.validate(labels)
            try db.cachedStatement(sql: "UPDATE namespaces SET labels = ?, updated_at = ? WHERE name = ?").execute(
                           arguments: [Codec.encode(labels), Timestamp.now.nanosecondsSinceEpoch, namespace.name])
            return NamespaceInfo(name: namespace.name, labels: labels)
        }
    }

    /// Deletes a namespace that holds no images, blobs, containers or snapshots (`failedPrecondition`
    /// naming what it still holds otherwise). Its leases and ingests go with it, as in containerd.
    public func deleteNamespace(_ namespace: Namespace) async throws(BerthError) {
        let blobs = self.blobs
        try await write { db in
            guard try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM namespaces WHERE name = ?"), arguments: [namespace.name]) == true else {
                throw BerthError.notFound("namespace \(namespace): not found")
            }
            var holds: [String] = []
            for (table, noun) in [("images", "images"), ("content", "blobs"), ("containers", "containers"), ("snapshots", "snapshots")] {
                if try Bool.fetchOne(db, sql: "SELECT 1 FROM \(table) WHERE namespace = ? LIMIT 1", arguments: [namespace.name]) == true {
                    holds.append(noun)
                }
            }
            if !holds.isEmpty {
                throw BerthError.failedPrecondition("namespace \(quoted(namespace.name)) must be empty, but it still has \(holds.joined(separator: ", "))")
            }
            let keys = try String.fetchAll(db.cachedStatement(sql: "SELECT key FROM ingests WHERE namespace = ?"), arguments: [namespace.name])
            try db.cachedStatement(sql: "DELETE FROM ingests WHERE namespace = ?").execute(arguments: [namespace.name])
            try db.cachedStatement(sql: "DELETE FROM lease_resources WHERE namespace = ?").execute(arguments: [namespace.name])
            try db.cachedStatement(sql: "DELETE FROM leases WHERE namespace = ?").execute(arguments: [namespace.name])
            try db.cachedStatement(sql: "DELETE FROM namespaces WHERE name = ?").execute(arguments: [namespace.name])
            for key in keys { try? blobs.discardIdleIngest(key: key, ref: key) }
        }
    }
}
