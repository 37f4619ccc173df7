use sse_runtime::sse_poll;

#[sse_poll(interval = "5s")]
async fn devices() -> u32 {
    1
}

fn main() {}
