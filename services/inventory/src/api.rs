//! The `mall.inventory.v1.InventoryService` gRPC API.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use mall_proto::inventory::v1::inventory_service_server::InventoryService;
use mall_proto::inventory::v1::{
    CreateInventoryRequest, GetInventoryRequest, Inventory, ListInventoriesRequest,
    ListInventoriesResponse,
};
use platform_service::db::PgPool;
use platform_service::error::ApiError as Error;
use platform_service::{find_row, list_page, validate};
use tonic::{Request, Response, Status};

use crate::schema::inventories;

/// The contract's limits (the largest stock keeps giving stock back from
/// ever overflowing), which the consumers apply to events too.
pub use mall_saga::limits::{MAX_PRODUCT_NAME_CHARS, MAX_STOCK};

#[derive(Queryable, Selectable)]
#[diesel(table_name = inventories)]
struct ProductRow {
    id: i64,
    product_name: String,
    stock: i64,
}

impl From<ProductRow> for Inventory {
    fn from(row: ProductRow) -> Self {
        Self {
            id: row.id,
            product_name: row.product_name,
            stock: row.stock,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = inventories)]
struct NewProduct {
    product_name: String,
    stock: i64,
}

impl TryFrom<CreateInventoryRequest> for NewProduct {
    type Error = Error;

    fn try_from(request: CreateInventoryRequest) -> Result<Self, Error> {
        Ok(Self {
            product_name: validate::text(
                "product_name",
                &request.product_name,
                MAX_PRODUCT_NAME_CHARS,
                false,
            )
            .map_err(Error::InvalidArgument)?,
            stock: validate::in_range("stock", request.stock, 0, MAX_STOCK)
                .map_err(Error::InvalidArgument)?,
        })
    }
}

/// Serves products and their stock.
pub struct InventoryApi {
    pool: PgPool,
}

impl InventoryApi {
    /// Reads and writes products in `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn create_inventory(
        &self,
        request: Request<CreateInventoryRequest>,
    ) -> Result<Response<Inventory>, Status> {
        let product = NewProduct::try_from(request.into_inner())?;
        let mut conn = self.pool.get().await.map_err(Error::from)?;
        let row: ProductRow = diesel::insert_into(inventories::table)
            .values(&product)
            .returning(ProductRow::as_returning())
            .get_result(&mut conn)
            .await
            .map_err(Error::from)?;
        tracing::info!(product_id = row.id, stock = row.stock, "Inventory created.");
        Ok(Response::new(row.into()))
    }

    async fn get_inventory(
        &self,
        request: Request<GetInventoryRequest>,
    ) -> Result<Response<Inventory>, Status> {
        let id = request.into_inner().id;
        let missing = format!("inventory {id} not found");
        let row = find_row!(self.pool, inventories::table, id, ProductRow, missing).await?;
        Ok(Response::new(row.into()))
    }

    async fn list_inventories(
        &self,
        request: Request<ListInventoriesRequest>,
    ) -> Result<Response<ListInventoriesResponse>, Status> {
        let request = request.into_inner();
        let (rows, next_page_token) = list_page!(
            self.pool,
            request,
            inventories::table,
            inventories::id,
            ProductRow,
            |r: &ProductRow| r.id
        )
        .await?;
        Ok(Response::new(ListInventoriesResponse {
            inventories: rows.into_iter().map(Inventory::from).collect(),
            next_page_token,
        }))
    }
}
