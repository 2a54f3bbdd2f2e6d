//! The OpenAPI 3.1 document of a topology's HTTP API, generated from its routes and Avro schemas.

use apache_avro::Schema;
use serde_json::{Map, Value as Json, json};

use crate::config::Topology;

/// An Avro schema as JSON Schema (the dialect OpenAPI 3.1 uses).
pub fn json_schema(schema: &Schema) -> Json {
    match schema {
        Schema::Null => json!({ "type": "null" }),
        Schema::Boolean => json!({ "type": "boolean" }),
        Schema::Int => json!({ "type": "integer", "format": "int32" }),
        Schema::Long => json!({ "type": "integer", "format": "int64" }),
        Schema::Float | Schema::Double => json!({ "type": "number" }),
        Schema::String | Schema::Bytes => json!({ "type": "string" }),
        Schema::Uuid(_) => json!({ "type": "string", "format": "uuid" }),
        Schema::Date => {
            json!({ "type": "integer", "format": "int32", "description": "days since 1970-01-01" })
        }
        Schema::TimeMillis | Schema::TimeMicros => {
            json!({ "type": "integer", "description": "time of day" })
        }
        Schema::TimestampMillis | Schema::LocalTimestampMillis => {
            json!({ "type": "integer", "format": "int64", "description": "milliseconds since the epoch" })
        }
        Schema::TimestampMicros | Schema::LocalTimestampMicros => {
            json!({ "type": "integer", "format": "int64", "description": "microseconds since the epoch" })
        }
        Schema::Enum(e) => json!({ "type": "string", "enum": e.symbols }),
        Schema::Fixed(f) => json!({ "type": "string", "minLength": f.size, "maxLength": f.size }),
        Schema::Array(a) => json!({ "type": "array", "items": json_schema(&a.items) }),
        Schema::Map(m) => {
            json!({ "type": "object", "additionalProperties": json_schema(&m.types) })
        }
        Schema::Union(u) => {
            json!({ "anyOf": u.variants().iter().map(json_schema).collect::<Vec<_>>() })
        }
        Schema::Record(r) => {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for f in &r.fields {
                let mut field = json_schema(&f.schema);
                if let (Some(doc), Some(obj)) = (&f.doc, field.as_object_mut()) {
                    obj.insert("description".into(), json!(doc));
                }
                if let (Some(default), Some(obj)) = (&f.default, field.as_object_mut()) {
                    obj.insert("default".into(), default.clone());
                } else {
                    required.push(f.name.clone());
                }
                properties.insert(f.name.clone(), field);
            }
            let mut out = json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false });
            if let (Some(doc), Some(obj)) = (&r.doc, out.as_object_mut()) {
                obj.insert("description".into(), json!(doc));
            }
            out
        }
        other => {
            json!({ "description": format!("{:?}", apache_avro::schema::SchemaKind::from(other)) })
        }
    }
}

/// A value that fits `schema`, for examples.
pub fn example(schema: &Schema) -> Json {
    match schema {
        Schema::Null => Json::Null,
        Schema::Boolean => json!(true),
        Schema::Int | Schema::Long | Schema::Date | Schema::TimeMillis | Schema::TimeMicros => {
            json!(1)
        }
        Schema::TimestampMillis | Schema::LocalTimestampMillis => json!(1_767_225_600_000_i64),
        Schema::TimestampMicros | Schema::LocalTimestampMicros => json!(1_767_225_600_000_000_i64),
        Schema::Float | Schema::Double => json!(1.5),
        Schema::Uuid(_) => json!("0190a6e4-6c53-7a39-9d1e-000000000001"),
        Schema::Enum(e) => json!(e.symbols.first()),
        Schema::Fixed(f) => json!("x".repeat(f.size)),
        Schema::Array(a) => json!([example(&a.items)]),
        Schema::Map(m) => json!({ "key": example(&m.types) }),
        Schema::Union(u) => u
            .variants()
            .iter()
            .find(|v| !matches!(v, Schema::Null))
            .map_or(Json::Null, example),
        Schema::Record(r) => Json::Object(
            r.fields
                .iter()
                .map(|f| {
                    (
                        f.name.clone(),
                        f.default
                            .clone()
                            .filter(|d| !d.is_null())
                            .unwrap_or_else(|| example(&f.schema)),
                    )
                })
                .collect(),
        ),
        _ => json!("example"),
    }
}

fn error_response(description: &str) -> Json {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

/// The whole document.
pub fn document(t: &Topology) -> Json {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let secured = |has_token: bool| {
        if has_token {
            json!([{ "bearer": [] }])
        } else {
            json!([])
        }
    };
    for route in &t.ingress {
        let name = route.schema.short_name().to_string();
        schemas.insert(name.clone(), json_schema(&route.schema.schema));
        let mut responses = Map::new();
        responses.insert("202".into(), json!({ "description": "accepted: the broker acknowledged the event", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } } }));
        responses.insert(
            "400".into(),
            error_response(
                "the body is not JSON or does not fit the schema (every field error listed)",
            ),
        );
        responses.insert(
            "413".into(),
            error_response("the body is larger than the limit"),
        );
        responses.insert(
            "415".into(),
            error_response("the content type is not application/json"),
        );
        responses.insert(
            "500".into(),
            error_response("the schema registry refused the route's schema (a deployment problem): nothing was written, and sending again will not help"),
        );
        responses.insert("503".into(), error_response("Kafka or the registry is unavailable; nothing was written, unless Kafka did not acknowledge in time (the error says so): retry after Retry-After seconds with `Idempotency-Key` set to the eventId given"));
        if t.http.ingress_token.is_some() {
            responses.insert("401".into(), error_response("no bearer token"));
            responses.insert("403".into(), error_response("wrong bearer token"));
        }
        let operation = json!({
            "operationId": format!("{}{}", route.method.to_lowercase(), route.path.replace(['/', '-'], "_")),
            "summary": format!("Publish a {name} event to `{}`", route.topic),
            "security": secured(t.http.ingress_token.is_some()),
            "parameters": [{ "name": "Idempotency-Key", "in": "header", "required": false, "schema": { "type": "string" },
                             "description": "becomes the event id: the same key twice is processed once" }],
            "requestBody": { "required": true, "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{name}") }, "example": example(&route.schema.schema) } } },
            "responses": responses,
        });
        let entry = paths.entry(route.path.clone()).or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(route.method.to_lowercase(), operation);
        }
    }
    for e in &t.entities {
        let kind = &e.name;
        let id_param =
            json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } });
        let security = secured(t.http.query_token.is_some());
        paths.insert(format!("/entities/{kind}/{{id}}"), json!({ "get": {
            "operationId": format!("get_{kind}"), "summary": format!("Current state of a {kind}"), "security": security,
            "parameters": [id_param, { "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" } }],
            "responses": {
                "200": { "description": "the entity", "headers": { "ETag": { "schema": { "type": "string" } } },
                         "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Entity" } } } },
                "304": { "description": "not modified since the ETag given" },
                "404": error_response("unknown kind or id"),
            } } }));
        paths.insert(format!("/entities/{kind}/{{id}}/events"), json!({ "get": {
            "operationId": format!("get_{kind}_events"), "summary": format!("The event log of a {kind}, by version"), "security": secured(t.http.query_token.is_some()),
            "parameters": [id_param,
                { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 } },
                { "name": "after", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0, "default": 0 } }],
            "responses": {
                "200": { "description": "a page of events", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/EventPage" } } } },
                "400": error_response("a bad query parameter"),
                "404": error_response("unknown kind, or no events"),
            } } }));
    }
    schemas.insert("Accepted".into(), json!({ "type": "object", "required": ["eventId", "topic", "partition", "offset"], "properties": {
        "eventId": { "type": "string" }, "topic": { "type": "string" }, "partition": { "type": "integer" }, "offset": { "type": "integer" } } }));
    schemas.insert("Error".into(), json!({ "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } }));
    schemas.insert("Entity".into(), json!({ "type": "object", "required": ["kind", "id", "state", "version"], "properties": {
        "kind": { "type": "string" }, "id": { "type": "string" }, "state": {}, "version": { "type": "integer" },
        "updatedAt": { "type": ["string", "null"], "format": "date-time" }, "lastEventId": { "type": ["string", "null"] } } }));
    schemas.insert("EventPage".into(), json!({ "type": "object", "required": ["events"], "properties": {
        "events": { "type": "array", "items": { "type": "object" } }, "next": { "type": ["integer", "null"] } } }));
    json!({
        "openapi": "3.1.0",
        "info": { "title": format!("outflow: {}", t.name), "version": env!("CARGO_PKG_VERSION"),
                  "description": "Ingress routes publish business events to Kafka; entity routes read the state outflow keeps." },
        "paths": paths,
        "components": { "schemas": schemas, "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
    })
}
