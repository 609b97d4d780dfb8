//! Statements whose text never changes, kept prepared. diesel prepares a
//! query once per connection only when it can tell that its text is the
//! same every time, which it never assumes of an `UPDATE` (its `SET` list
//! may be empty) or of raw SQL; such statements are parsed and planned on
//! every call. [`fixed_statement!`](crate::fixed_statement) declares one
//! by the pieces of its text and the parameters between them, so each
//! connection parses and plans it once.

/// Declares a statement of fixed text: a struct with one field per
/// parameter (it may borrow, with one lifetime), run with diesel-async's
/// `RunQueryDsl` (`execute`, or `load` into a `QueryableByName` when it
/// returns rows). The text is given as its first piece, then each
/// parameter (`{ field: Type as SqlType }`) followed by the piece after it.
/// Connections keep it prepared by its text.
///
/// The crate that uses it depends on `diesel` and `diesel-async`.
#[macro_export]
macro_rules! fixed_statement {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident $(<$lt:lifetime>)?;
        $first:literal
        $( { $field:ident : $ty:ty as $sql_type:ty } $piece:literal )*
    ) => {
        $(#[$meta])*
        $vis struct $name $(<$lt>)? {
            $( $field: $ty, )*
        }

        // Not a static id: the cache keys the statement by its text, which
        // never changes (diesel only refuses to when told it may).
        impl $(<$lt>)? ::diesel::query_builder::QueryId for $name $(<$lt>)? {
            type QueryId = ();
            const HAS_STATIC_QUERY_ID: bool = false;
        }

        impl $(<$lt>)? ::diesel::query_builder::Query for $name $(<$lt>)? {
            type SqlType = ::diesel::sql_types::Untyped;
        }

        impl $(<$lt>)? ::diesel::query_builder::QueryFragment<::diesel::pg::Pg>
            for $name $(<$lt>)?
        {
            fn walk_ast<'b>(
                &'b self,
                mut out: ::diesel::query_builder::AstPass<'_, 'b, ::diesel::pg::Pg>,
            ) -> ::diesel::QueryResult<()> {
                out.push_sql($first);
                $(
                    out.push_bind_param::<$sql_type, _>(&self.$field)?;
                    out.push_sql($piece);
                )*
                Ok(())
            }
        }

        impl<$($lt,)? Conn> ::diesel_async::RunQueryDsl<Conn> for $name $(<$lt>)? {}
    };
}
