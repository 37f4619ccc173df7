use sse_runtime::sse_topic;

#[sse_topic("readings")]
#[derive(serde::Serialize)]
struct Reading<T> {
    value: T,
}

fn main() {}
