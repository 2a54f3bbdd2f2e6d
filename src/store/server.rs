//! What a MongoDB deployment must offer: transactions (a replica set) and the `bulkWrite` command.

use mongodb::bson::{Bson, Document};

/// MongoDB 8.0's wire version, the first with the `bulkWrite` command that writes a batch's
/// event log, entities, outbox and offsets in one round trip.
pub const MIN_WIRE_VERSION: i64 = 25;

/// Why a server's `hello` answer rules it out, or `None` when it fits.
pub fn unfit(hello: &Document) -> Option<String> {
    let wire = match hello.get("maxWireVersion") {
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Int64(v)) => *v,
        _ => 0,
    };
    if wire < MIN_WIRE_VERSION {
        return Some(format!(
            "Mongo answers as {} (wire version {wire}): outflow needs MongoDB 8.0 or later, whose \
             `bulkWrite` command writes each batch's collections in one round trip",
            release(wire)
        ));
    }
    if hello.get_str("setName").is_err() {
        return Some(
            "Mongo is not a replica set: multi-document transactions need one (a single node \
             can be a replica set of one)"
                .to_string(),
        );
    }
    None
}

/// The MongoDB release a wire version stands for, as far as it matters here.
fn release(wire: i64) -> &'static str {
    match wire {
        21..=24 => "MongoDB 7.x",
        17..=20 => "MongoDB 6.x",
        13..=16 => "MongoDB 5.x",
        _ => "older than MongoDB 5.0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn a_replica_set_of_mongodb_8_fits() {
        assert_eq!(
            unfit(&doc! { "maxWireVersion": 25, "setName": "rs0" }),
            None
        );
        assert_eq!(
            unfit(&doc! { "maxWireVersion": 27_i64, "setName": "rs0" }),
            None
        );
    }

    #[test]
    fn mongodb_7_is_named_with_what_outflow_needs() {
        let why = unfit(&doc! { "maxWireVersion": 21, "setName": "rs0" }).unwrap_or_default();
        assert!(why.contains("MongoDB 7.x (wire version 21)"), "{why}");
        assert!(why.contains("needs MongoDB 8.0 or later"), "{why}");
    }

    #[test]
    fn a_standalone_server_is_refused_for_transactions() {
        let why = unfit(&doc! { "maxWireVersion": 25 }).unwrap_or_default();
        assert!(why.contains("not a replica set"), "{why}");
    }

    #[test]
    fn an_answer_without_a_wire_version_is_refused() {
        let why = unfit(&doc! { "setName": "rs0" }).unwrap_or_default();
        assert!(why.contains("wire version 0"), "{why}");
    }
}
