import GRDB

/// The metadata database's schema, as numbered migrations.
///
/// Never edit a migration that has shipped: add the next one. `MigrationTests` opens a database
/// made by version 1 and migrates it forward. Timestamps are nanoseconds since the epoch; labels
/// and annotations are JSON objects; every object row carries its namespace.
enum Schema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: namespaces, content, images, leases, containers") { db in
            try db.execute(sql: """
                CREATE TABLE namespaces (
                    name        TEXT PRIMARY KEY NOT NULL,
                    labels      TEXT NOT NULL DEFAULT '{}',
                    created_at  INTEGER NOT NULL,
                    updated_at  INTEGER NOT NULL
                );

                -- A blob as one namespace sees it. The bytes live once in the BlobStore; a blob
                -- whose digest no row names is garbage.
                CREATE TABLE content (
                    namespace   TEXT NOT NULL REFERENCES namespaces(name),
                    digest      TEXT NOT NULL,
                    size        INTEGER NOT NULL,
                    labels      TEXT NOT NULL DEFAULT '{}',
                    created_at  INTEGER NOT NULL,
                    updated_at  INTEGER NOT NULL,
                    PRIMARY KEY (namespace, digest)
                );
                CREATE INDEX content_by_digest ON content(digest);

                -- Ingests in progress, so Status/ListStatuses/Abort are scoped by namespace.
                -- `key` names the ingest's directory in the BlobStore.
                CREATE TABLE ingests (
                    namespace   TEXT NOT NULL REFERENCES namespaces(name),
                    ref         TEXT NOT NULL,
                    key         TEXT NOT NULL UNIQUE,
                    expected    TEXT,
                    created_at  INTEGER NOT NULL,
                    PRIMARY KEY (namespace, ref)
                );

                CREATE TABLE images (
                    namespace   TEXT NOT NULL REFERENCES namespaces(name),
                    name        TEXT NOT NULL,
                    labels      TEXT NOT NULL DEFAULT '{}',
                    media_type  TEXT NOT NULL,
                    digest      TEXT NOT NULL,
                    size        INTEGER NOT NULL,
                    annotations TEXT NOT NULL DEFAULT '{}',
                    created_at  INTEGER NOT NULL,
                    updated_at  INTEGER NOT NULL,
                    PRIMARY KEY (namespace, name)
                );

                CREATE TABLE leases (
                    namespace   TEXT NOT NULL REFERENCES namespaces(name),
                    id          TEXT NOT NULL,
                    labels      TEXT NOT NULL DEFAULT '{}',
                    created_at  INTEGER NOT NULL,
                    PRIMARY KEY (namespace, id)
                );

                -- type: 'content' (id = digest), 'ingests' (id = ref), 'snapshots/<name>' (id = key)
                CREATE TABLE lease_resources (
                    namespace   TEXT NOT NULL,
                    lease       TEXT NOT NULL,
                    type        TEXT NOT NULL,
                    id          TEXT NOT NULL,
                    PRIMARY KEY (namespace, lease, type, id),
                    FOREIGN KEY (namespace, lease) REFERENCES leases(namespace, id) ON DELETE CASCADE
                );

                -- runtime_options, spec: protobuf Any (type URL + bytes), stored as sent.
                -- extensions: JSON object of name -> {typeURL, value(base64)}.
                CREATE TABLE containers (
                    namespace             TEXT NOT NULL REFERENCES namespaces(name),
                    id                    TEXT NOT NULL,
                    labels                TEXT NOT NULL DEFAULT '{}',
                    image                 TEXT NOT NULL DEFAULT '',
                    runtime_name          TEXT NOT NULL,
                    runtime_options_type  TEXT,
                    runtime_options       BLOB,
                    spec_type             TEXT,
                    spec                  BLOB,
                    snapshotter           TEXT NOT NULL DEFAULT '',
                    snapshot_key          TEXT NOT NULL DEFAULT '',
                    sandbox               TEXT NOT NULL DEFAULT '',
                    extensions            TEXT NOT NULL DEFAULT '{}',
                    created_at            INTEGER NOT NULL,
                    updated_at            INTEGER NOT NULL,
                    PRIMARY KEY (namespace, id)
                );
                """)
        }
        migrator.registerMigration("v2: snapshots") { db in
            try db.execute(sql: """
                -- A snapshot as one namespace sees it. `key` is the key of an active snapshot or
                -- view, or the name of a committed one; `id` names its storage in the
                -- snapshotter. A row is `ready` once its storage is complete: a Prepare inserts
                -- it not ready (reserving the key, pinning the parent), makes the storage, then
                -- sets ready. Start-up removes rows a crash left not ready.
                -- size, inodes: usage of a committed snapshot, recorded at commit.
                CREATE TABLE snapshots (
                    id          INTEGER PRIMARY KEY AUTOINCREMENT,
                    snapshotter TEXT NOT NULL,
                    namespace   TEXT NOT NULL REFERENCES namespaces(name),
                    key         TEXT NOT NULL,
                    parent_id   INTEGER REFERENCES snapshots(id) DEFERRABLE INITIALLY DEFERRED,
                    kind        TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
                    labels      TEXT NOT NULL DEFAULT '{}',
                    ready       INTEGER NOT NULL DEFAULT 0,
                    size        INTEGER,
                    inodes      INTEGER,
                    created_at  INTEGER NOT NULL,
                    updated_at  INTEGER NOT NULL,
                    UNIQUE (snapshotter, namespace, key)
                );
                CREATE INDEX snapshots_by_parent ON snapshots(parent_id);
                """)
        }
        return migrator
    }
}
