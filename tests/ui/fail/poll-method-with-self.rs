use sse_runtime::{PollError, sse_poll};

struct Fleet;

impl Fleet {
    #[sse_poll(interval = "5s")]
    async fn devices(&self) -> Result<u32, PollError> {
        Ok(1)
    }
}

fn main() {}
