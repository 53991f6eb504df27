//! The server's own pages: GraphiQL at `GET /graphql` and the status page at `GET /`, with
//! every file they load embedded in the binary ([`assets`]).

pub mod assets;
pub mod graphiql;
pub mod status;
