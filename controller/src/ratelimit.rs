//! Client-side rate limiting of API requests (`--kube-api-qps`, `--kube-api-burst`, spec §11): a token
//! bucket in front of kube's service stack, as client-go's default limiter. kube-rs has none built in.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kube::client::ClientBuilder;
use tower::{Layer, Service};

/// A client whose requests are limited to `qps` per second with bursts of `burst`; `qps <= 0` disables it.
pub fn client(config: kube::Config, qps: f32, burst: u32) -> Result<kube::Client, kube::Error> {
    let builder = ClientBuilder::try_from(config)?;
    if qps <= 0.0 {
        return Ok(builder.build());
    }
    Ok(builder.with_layer(&RateLimitLayer::new(qps, burst)).build())
}

#[derive(Debug)]
struct Bucket {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// Takes a token, or says how long to wait for one.
    fn take(&self) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.qps).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            None
        } else {
            *state = (tokens, now);
            Some(Duration::from_secs_f64((1.0 - tokens) / self.qps))
        }
    }

    async fn acquire(&self) {
        while let Some(wait) = self.take() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    bucket: Arc<Bucket>,
}

impl RateLimitLayer {
    pub fn new(qps: f32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimitLayer {
            bucket: Arc::new(Bucket {
                qps: f64::from(qps),
                burst,
                state: Mutex::new((burst, Instant::now())),
            }),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            bucket: self.bucket.clone(),
        }
    }
}

pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<Bucket>,
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    /// The inner future does no I/O until polled, so waiting for the token before polling it delays the
    /// request itself.
    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let bucket = self.bucket.clone();
        Box::pin(async move {
            bucket.acquire().await;
            fut.await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_paces() {
        let layer = RateLimitLayer::new(10.0, 3);
        let b = &layer.bucket;
        assert!((0..3).all(|_| b.take().is_none()));
        let wait = b.take().expect("burst used up");
        assert!(wait <= Duration::from_millis(100) && wait > Duration::from_millis(50));
    }
}
