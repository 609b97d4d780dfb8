DROP INDEX request_ids_created_at;
ALTER TABLE request_ids DROP CONSTRAINT request_ids_pkey;
DELETE FROM request_ids a USING request_ids b
    WHERE a.request_id = b.request_id AND a.caller > b.caller;
ALTER TABLE request_ids ADD PRIMARY KEY (request_id);
ALTER TABLE request_ids DROP COLUMN caller;
