//! What a MongoDB deployment must offer: transactions (a replica set) and the `bulkWrite` command.

use mongodb::bson::{Bson, Document};

/// MongoDB 8.0's wire version, the first with the `bulkWrite` command that writes a batch's
/// event log, entities, outbox and offsets in one round trip.
pub const MIN_WIRE_VERSION: i64 = 25;

/// What a fitting server is (its replica set and wire version, for `validate --online`), or why
/// its `hello` answer rules it out.
pub fn fit(hello: &Document) -> Result<String, String> {
    let wire = match hello.get("maxWireVersion") {
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Int64(v)) => *v,
        _ => 0,
    };
    if wire < MIN_WIRE_VERSION {
        return Err(format!(
            "Mongo answers as {} (wire version {wire}): outflow needs MongoDB 8.0 or later, whose \
             `bulkWrite` command writes each batch's collections in one round trip",
            release(wire)
        ));
    }
    match hello.get_str("setName") {
        Ok(set) => Ok(format!("replica set `{set}`, wire version {wire}")),
        Err(_) => Err(
            "Mongo is not a replica set: multi-document transactions need one \
             (a single node can be a replica set of one)"
                .to_string(),
        ),
    }
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
            fit(&doc! { "maxWireVersion": 25, "setName": "rs0" }),
            Ok("replica set `rs0`, wire version 25".to_string())
        );
        assert_eq!(
            fit(&doc! { "maxWireVersion": 27_i64, "setName": "rs0" }),
            Ok("replica set `rs0`, wire version 27".to_string())
        );
    }

    #[test]
    fn mongodb_7_is_named_with_what_outflow_needs() {
        let why = fit(&doc! { "maxWireVersion": 21, "setName": "rs0" })
            .err()
            .unwrap_or_default();
        assert!(why.contains("MongoDB 7.x (wire version 21)"), "{why}");
        assert!(why.contains("needs MongoDB 8.0 or later"), "{why}");
    }

    #[test]
    fn a_standalone_server_is_refused_for_transactions() {
        let why = fit(&doc! { "maxWireVersion": 25 })
            .err()
            .unwrap_or_default();
        assert!(why.contains("not a replica set"), "{why}");
    }

    #[test]
    fn an_answer_without_a_wire_version_is_refused() {
        let why = fit(&doc! { "setName": "rs0" }).err().unwrap_or_default();
        assert!(why.contains("wire version 0"), "{why}");
    }
}
