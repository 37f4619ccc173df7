use sse_runtime::sse_poll;

#[sse_poll(interval = "5s")]
async fn devices() -> Result<u32, String> {
    Err("offline".to_owned())
}

fn main() {}
