//! A binary of your own with a stage written in Rust, registered by name on the runtime builder.
//!
//! `cargo run --example custom_stage` runs it against the local stack (`deploy/local/stack.sh up`).

use outflow::stage::{Emitted, StageError, StageInput, StageOutput};
use outflow::{Roles, Runtime};
use serde_json::json;

/// Adds insurance tax to the premium of a QuotePriced event: pure, no I/O.
pub fn premium_with_tax(input: StageInput<'_>) -> Result<StageOutput, StageError> {
    let premium = input.event["premium"]
        .as_f64()
        .ok_or_else(|| StageError("premium is not a number".into()))?;
    let quote_id = input.event["quoteId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut state = input
        .state
        .cloned()
        .unwrap_or_else(|| json!({ "quoteId": quote_id }));
    state["status"] = json!("PRICED");
    state["premiumWithTax"] = json!((premium * 1.19 * 100.0).round() / 100.0);
    let update = json!({
        "entityKind": "quote", "entityId": quote_id, "version": input.meta["version"],
        "eventType": input.meta["type"], "status": "PRICED", "state": state.to_string(),
    });
    Ok(StageOutput {
        state,
        emits: vec![Emitted {
            topic: "example-entity-updates".into(),
            key: quote_id,
            value: update,
        }],
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    outflow::cli::init_logging();
    let runtime = Runtime::builder(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/custom_stage.toml"
    ))
    .stage("premium-with-tax", premium_with_tax)
    .build()
    .await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    runtime.run(Roles::All, stopped).await?;
    Ok(())
}
