DROP TABLE reservations; DROP TABLE inventories;
