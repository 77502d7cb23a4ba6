//! How commands print: human-readable text, or with `--json` exactly one JSON object on stdout
//! (errors included, as `{"ok":false,"error":<kind>,"message":..,"exit_code":..}`), so scripts
//! parse one stream and still get the exit status.

use crate::cluster_dir::ClusterError;
use crate::error::ClientError;
use serde_json::{json, Map, Value};

/// The output mode of one command.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// `--json`: one JSON object on stdout instead of text.
    pub json: bool,
}

impl Output {
    /// Prints a JSON object (in JSON mode callers print this instead of text).
    pub fn print_json(&self, value: &Value) {
        println!("{value}");
    }

    /// Reports a failed command and returns its exit status: `error: <message>` on stderr, or
    /// the JSON error object (with `extra` fields merged in) on stdout.
    pub fn fail(
        &self,
        kind: &str,
        message: &str,
        exit_code: i32,
        extra: Map<String, Value>,
    ) -> i32 {
        if self.json {
            let mut obj = Map::new();
            obj.insert("ok".into(), Value::Bool(false));
            obj.insert("error".into(), json!(kind));
            obj.insert("message".into(), json!(message));
            obj.insert("exit_code".into(), json!(exit_code));
            obj.extend(extra);
            self.print_json(&Value::Object(obj));
        } else {
            eprintln!("error: {message}");
        }
        exit_code
    }

    /// Reports a client error; Unavailable and Timeout carry their replica counts in JSON.
    pub fn client_error(&self, e: &ClientError, mut extra: Map<String, Value>) -> i32 {
        match e {
            ClientError::Unavailable {
                alive, required, ..
            } => {
                extra.insert("alive".into(), json!(alive));
                extra.insert("required".into(), json!(required));
            }
            ClientError::Timeout { acks, required, .. } => {
                extra.insert("acks".into(), json!(acks));
                extra.insert("required".into(), json!(required));
            }
            _ => {}
        }
        self.fail(e.kind(), &e.to_string(), e.exit_code(), extra)
    }

    /// Reports a launcher error.
    pub fn cluster_error(&self, e: &ClusterError) -> i32 {
        match e {
            ClusterError::Client(c) => self.client_error(c, Map::new()),
            other => self.fail(
                other.kind(),
                &other.to_string(),
                other.exit_code(),
                Map::new(),
            ),
        }
    }
}
