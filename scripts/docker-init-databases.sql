-- Database per service (docker-compose only; scripts/run-mall.sh creates them itself).
CREATE DATABASE mall_order;
CREATE DATABASE mall_delivery;
CREATE DATABASE mall_inventory;
