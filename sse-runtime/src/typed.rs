//! The trait `#[sse_topic]` implements for its type.

/// A type with its own topic: implemented by `#[sse_topic("...")]`, which also generates the
/// typed `publish_<snake_case_name>` helpers and the route.
///
/// ```
/// use serde::Serialize;
/// use sse_runtime::{SseTopic, sse_topic};
///
/// #[sse_topic("alarms", event = "alarm")]
/// #[derive(Serialize)]
/// struct Alarm {
///     level: u8,
/// }
///
/// assert_eq!(Alarm::TOPIC, "alarms");
/// assert_eq!(Alarm::EVENT, Some("alarm"));
/// assert_eq!(Alarm::PATH, "/sse/alarms");
/// # let manager = sse_runtime::Manager::new();
/// publish_alarm_to(&manager, &Alarm { level: 3 }); // typed: only an Alarm goes to "alarms"
/// ```
///
/// It says where a type goes, not how it is written: `Serialize` is not a supertrait (the
/// publish helpers require it, so a type without it is one compile error, at its name). Generic
/// code that publishes any topic type asks for both:
///
/// ```
/// use serde::Serialize;
/// use sse_runtime::{Manager, SseTopic};
///
/// fn publish_any<T: SseTopic + Serialize>(manager: &Manager, value: &T) {
///     manager.publish_event(T::TOPIC, T::EVENT, value);
/// }
/// ```
pub trait SseTopic {
    /// The topic (for a template such as `devices/{id}`, the template).
    const TOPIC: &'static str;
    /// The SSE event name (`event:` field) of its events, if any.
    const EVENT: Option<&'static str>;
    /// The HTTP path of its route.
    const PATH: &'static str;
}
