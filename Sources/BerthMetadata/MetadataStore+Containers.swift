import BerthCore
import Foundation
import GRDB

extension MetadataStore {
    static func container(from row: Row) -> Container {
        func typed(_ typeColumn: String, _ valueColumn: String) -> TypedValue? {
            guard let type: String = row[typeColumn] else { return nil }
            let bytes: [UInt8] = (row[valueColumn] as Data?).map(Array.init) ?? []
            return TypedValue(typeURL: type, value: bytes)
        }
        return Container(
            id: row["id"], labels: Codec.labels(row["labels"]), image: row["image"],
            runtimeName: row["runtime_name"], runtimeOptions: typed("runtime_options_type", "runtime_options"),
            spec: typed("spec_type", "spec"), snapshotter: row["snapshotter"], snapshotKey: row["snapshot_key"],
            createdAt: Codec.time(row, "created_at"), updatedAt: Codec.time(row, "updated_at"),
            extensions: Codec.extensions(row["extensions"]), sandbox: row["sandbox"])
    }

    static func validate(_ container: Container) throws(BerthError) {
        try Identifier.validate(container.id, field: "container id")
        try Labels.validate(container.labels)
        guard !container.runtimeName.isEmpty else {
            throw .invalidArgument("container \(quoted(container.id)): Runtime.Name must be set")
        }
        guard container.spec != nil else {
            throw .invalidArgument("container \(quoted(container.id)): Spec must be set")
        }
        if !container.snapshotKey.isEmpty && container.snapshotter.isEmpty {
            throw .invalidArgument("container \(quoted(container.id)): Snapshotter must be set if SnapshotKey is set")
        }
    }

    /// The container's row; `notFound` if the namespace has no such container.
    static func containerRow(_ db: Database, _ namespace: Namespace, id: String) throws -> Row {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM containers WHERE namespace = ? AND id = ?"),
                                         arguments: [namespace.name, id]) else {
            throw BerthError.notFound("container \(quoted(id)): not found")
        }
        return row
    }

    public func container(_ namespace: Namespace, id: String) async throws(BerthError) -> Container {
        try cachedRead(.container(namespace: namespace.name, id: id)) { db in
            Self.container(from: try Self.containerRow(db, namespace, id: id))
        }
    }

    public func containers(_ namespace: Namespace, filter: Filter) async throws(BerthError) -> [Container] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM containers WHERE namespace = ? ORDER BY id"), arguments: [namespace.name])
                .map(Self.container(from:)).filter(filter.matches)
        }
    }

    public func createContainer(_ namespace: Namespace, _ container: Container) async throws(BerthError) -> Container {
        try Self.validate(container)
        return try await write { db in
            try Self.ensureNamespace(db, namespace)
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM containers WHERE namespace = ? AND id = ?"),
                                 arguments: [namespace.name, container.id]) == true {
                throw BerthError.alreadyExists("container \(quoted(container.id)): already exists")
            }
            var stored = container
            stored.createdAt = .now
            stored.updatedAt = stored.createdAt
            try Self.put(db, namespace, stored)
            return stored
        }
    }

    /// Updates a container. With no paths: labels, spec, extensions, image and snapshot key are
    /// replaced, and a changed runtime name or snapshotter is refused as immutable.
    public func updateContainer(_ namespace: Namespace, _ container: Container, paths: [String]) async throws(BerthError) -> Container {
        try await write { db in
            var updated = Self.container(from: try Self.containerRow(db, namespace, id: container.id))
            var paths = paths
            if paths.isEmpty {
                if container.runtimeName != updated.runtimeName {
                    throw BerthError.invalidArgument("container \(quoted(container.id)): Runtime.Name field is immutable")
                }
                if container.snapshotter != updated.snapshotter {
                    throw BerthError.invalidArgument("container \(quoted(container.id)): Snapshotter field is immutable")
                }
                paths = ["labels", "spec", "extensions", "image", "snapshotkey"]
            }
            for path in paths {
                if applyMapPath(path, prefix: "labels", from: container.labels, to: &updated.labels) { continue }
                if path == "extensions" { updated.extensions = container.extensions; continue }
                if path.hasPrefix("extensions.") {
                    let key = String(path.dropFirst("extensions.".count))
                    updated.extensions[key] = container.extensions[key]
                    continue
                }
                switch path {
                case "spec": updated.spec = container.spec
                case "image": updated.image = container.image
                case "snapshotkey": updated.snapshotKey = container.snapshotKey
                default:
                    throw BerthError.invalidArgument("container \(quoted(container.id)): cannot update \(quoted(path)) field")
                }
            }
            try Self.validate(updated)
            updated.updatedAt = .now
            try Self.put(db, namespace, updated)
            return updated
        }
    }

    public func deleteContainer(_ namespace: Namespace, id: String) async throws(BerthError) {
        try await write { db in
            try db.cachedStatement(sql: "DELETE FROM containers WHERE namespace = ? AND id = ?").execute(arguments: [namespace.name, id])
            if db.changesCount == 0 { throw BerthError.notFound("container \(quoted(id)): not found") }
        }
        onDeletion()
    }

    static func put(_ db: Database, _ namespace: Namespace, _ c: Container) throws {
        try db.cachedStatement(sql: """
            INSERT OR REPLACE INTO containers (namespace, id, labels, image, runtime_name, runtime_options_type,
                runtime_options, spec_type, spec, snapshotter, snapshot_key, sandbox, extensions, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [namespace.name, c.id, Codec.encode(c.labels), c.image, c.runtimeName,
                             c.runtimeOptions?.typeURL, c.runtimeOptions.map { Data($0.value) },
                             c.spec?.typeURL, c.spec.map { Data($0.value) }, c.snapshotter, c.snapshotKey,
                             c.sandbox, Codec.encode(c.extensions),
                             c.createdAt.nanosecondsSinceEpoch, c.updatedAt.nanosecondsSinceEpoch])
    }
}
