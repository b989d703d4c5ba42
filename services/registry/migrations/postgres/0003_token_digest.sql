-- AuthenticateWorkspace finds a workspace by its token's digest. Unique: a
-- token identifies one workspace (workspaces without a token hold NULL,
-- which a unique index does not compare).
CREATE UNIQUE INDEX workspaces_token_digest ON workspaces (token_digest);
