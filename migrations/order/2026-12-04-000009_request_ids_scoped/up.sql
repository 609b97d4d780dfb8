-- Request ids belong to their caller (the authenticated subject, '' when
-- authentication is off): one caller's id can neither collide with
-- another's nor tell it which order it created.
ALTER TABLE request_ids ADD COLUMN caller TEXT NOT NULL DEFAULT '';
ALTER TABLE request_ids DROP CONSTRAINT request_ids_pkey;
ALTER TABLE request_ids ADD PRIMARY KEY (caller, request_id);
-- The fingerprint is now the SHA-256 of a canonical encoding of the
-- request; the old ones held the request's fields (the address among them)
-- in clear. They are erased: a retry of such a call still gets its order
-- back (a 'legacy' fingerprint matches any request of its method).
UPDATE request_ids SET fingerprint = 'legacy';
-- Request ids expire (REQUEST_ID_RETENTION_SECS); the janitor's scan.
CREATE INDEX request_ids_created_at ON request_ids (created_at);
