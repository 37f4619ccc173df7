//! Sessions: the process view needs one. It shows a guard at work, the way a browser app
//! carries credentials to an `EventSource` (which cannot send headers): a cookie.
//!
//! `POST /api/session` opens a session: a random id in an `HttpOnly`, `SameSite=Strict`
//! cookie, valid for `--session SECS` (default an hour). The process route's guard admits a
//! request that carries a live session until the session expires: the stream ends then, the
//! browser's automatic reconnect is refused (`403`), `EventSource` gives up, and the page
//! opens a new session and a new stream.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

/// Session ids and when they expire. Expired ones are dropped whenever a session opens.
static SESSIONS: Mutex<Option<HashMap<String, SystemTime>>> = Mutex::new(None);

struct Settings {
    /// Per port: instances on one host share the browser's cookie jar (cookies ignore ports),
    /// and each instance knows its own sessions only.
    cookie: String,
    lifetime: Duration,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets the cookie's name (from the port) and the sessions' lifetime; once, at start-up.
pub fn configure(port: u16, lifetime: Duration) {
    let _ = SETTINGS.set(Settings {
        cookie: format!("dashboard_session_{port}"),
        lifetime,
    });
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings {
        cookie: "dashboard_session".to_owned(),
        lifetime: Duration::from_secs(3600),
    })
}

/// 128 random bits from the kernel, in hex.
fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `POST /api/session`: opens a session and sets its cookie.
pub async fn open() -> Response {
    let Settings { cookie, lifetime } = settings();
    let id = match new_id() {
        Ok(id) => id,
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    let now = SystemTime::now();
    {
        let mut sessions = SESSIONS.lock();
        let sessions = sessions.get_or_insert_with(HashMap::new);
        sessions.retain(|_, expires| *expires > now);
        sessions.insert(id.clone(), now + *lifetime);
    }
    let set_cookie = format!(
        "{cookie}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        lifetime.as_secs()
    );
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, set_cookie)]).into_response()
}

/// The process route's guard: a request with a known session is admitted until the session
/// expires (an expired one is refused by the runtime with `403`); one without gets `401`.
pub async fn required(headers: HeaderMap) -> Result<SystemTime, (StatusCode, &'static str)> {
    let name = &settings().cookie;
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        });
    let expires = id.and_then(|id| SESSIONS.lock().as_ref()?.get(id).copied());
    expires.ok_or((
        StatusCode::UNAUTHORIZED,
        "the process view needs a session: POST /api/session",
    ))
}
