DROP INDEX inbox_received_at;
