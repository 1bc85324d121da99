-- Podium schema 10: the API tokens of `podium serve` (`podium token create|list|revoke`).
-- A token is `pdm_<id>_<secret>`; only the id (the lookup key) is kept as given. Of the
-- secret only a slow hash is kept (scrypt with the row's own random salt, parameters in
-- podium/auth.py), so a copy of the database lets nobody call the API. scope is
-- read | write | admin | agent. A revoked or expired row stays, for `token list`.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    scope         TEXT NOT NULL,
    salt          BLOB NOT NULL,
    hash          BLOB NOT NULL,
    created_at    REAL NOT NULL,               -- epoch seconds
    expires_at    REAL,                        -- NULL: never
    revoked_at    REAL,
    last_used_at  REAL                         -- written at most once a minute per token
);
