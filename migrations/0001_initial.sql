-- remsim-server's persistent state: slot maps and per-bank settings.
-- Live state (connections, map states) is rebuilt at run time.

-- Slot maps as created through the API; at most one per bank slot and one
-- per client slot.
CREATE TABLE slotmaps (
    bank_id     INTEGER NOT NULL CHECK (bank_id BETWEEN 0 AND 1023),
    bank_slot   INTEGER NOT NULL CHECK (bank_slot BETWEEN 0 AND 1023),
    client_id   INTEGER NOT NULL CHECK (client_id BETWEEN 0 AND 1023),
    client_slot INTEGER NOT NULL CHECK (client_slot BETWEEN 0 AND 1023),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (bank_id, bank_slot),
    UNIQUE (client_id, client_slot)
);

-- Deleted maps whose RemoveMappingReq the bankd has not confirmed yet: sent
-- again when it (re)connects, so that no stale map survives at a bankd.
CREATE TABLE removals (
    bank_id     INTEGER NOT NULL,
    bank_slot   INTEGER NOT NULL,
    client_id   INTEGER NOT NULL,
    client_slot INTEGER NOT NULL,
    PRIMARY KEY (bank_id, bank_slot, client_id, client_slot)
);

-- Per-bank settings.
CREATE TABLE banks (
    bank_id  INTEGER PRIMARY KEY CHECK (bank_id BETWEEN 0 AND 1023),
    -- "ip:port" clients are sent instead of the bankd's source address.
    endpoint TEXT
);
