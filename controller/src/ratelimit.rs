//! Client-side rate limiting of API requests (`--kube-api-qps`, `--kube-api-burst`, spec §11): a token
//! bucket in front of kube's service stack, as client-go's default limiter (kube-rs has none built in), and
//! client-go's request metrics (`rest_client_requests_total`, `rest_client_rate_limiter_duration_seconds`),
//! so the API budget a workload costs can be read off `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kube::client::ClientBuilder;
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// A client whose requests are limited to `qps` per second with bursts of `burst` (`qps <= 0` disables
/// the limit) and counted in `metrics` under the label `client=<name>`, with a view of its budget.
pub fn client(
    config: kube::Config,
    qps: f32,
    burst: u32,
    metrics: Metrics,
    name: &'static str,
) -> Result<(kube::Client, ApiBudget), kube::Error> {
    let bucket = (qps > 0.0).then(|| Arc::new(Bucket::new(qps, burst)));
    let layer = RateLimitLayer {
        bucket: bucket.clone(),
        metrics,
        name,
    };
    let client = ClientBuilder::try_from(config)?.with_layer(&layer).build();
    Ok((client, ApiBudget(bucket)))
}

/// A view of a client's rate limiter, for writes that are worth sending only when they need not queue.
#[derive(Clone, Debug, Default)]
pub struct ApiBudget(Option<Arc<Bucket>>);

impl ApiBudget {
    /// Whether the budget is ample: no request is queued for a token and at least half the burst is left
    /// (always, unlimited). Writes that only report progress are sent only then, so under sustained load
    /// the budget goes to the writes that carry results.
    pub fn is_ample(&self) -> bool {
        self.0.as_ref().is_none_or(|b| {
            b.waiting.load(Ordering::Relaxed) == 0 && b.tokens(Instant::now()) >= (b.burst / 2.0).max(1.0)
        })
    }
}

#[derive(Debug)]
struct Bucket {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
    /// Requests sleeping for a token.
    waiting: AtomicUsize,
}

impl Bucket {
    fn new(qps: f32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Bucket {
            qps: f64::from(qps),
            burst,
            state: Mutex::new((burst, Instant::now())),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The tokens the bucket holds at `now`.
    fn tokens(&self, now: Instant) -> f64 {
        let (tokens, last) = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        (tokens + now.saturating_duration_since(last).as_secs_f64() * self.qps).min(self.burst)
    }

    /// Takes a token, or says how long to wait for one.
    fn take(&self) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.qps).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            None
        } else {
            *state = (tokens, now);
            Some(Duration::from_secs_f64((1.0 - tokens) / self.qps))
        }
    }

    async fn acquire(&self) {
        let Some(mut wait) = self.take() else { return };
        /// Counts a waiter until it has its token or its request is dropped.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        loop {
            tokio::time::sleep(wait).await;
            match self.take() {
                Some(w) => wait = w,
                None => return,
            }
        }
    }
}

#[derive(Clone)]
struct RateLimitLayer {
    bucket: Option<Arc<Bucket>>,
    metrics: Metrics,
    name: &'static str,
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            bucket: self.bucket.clone(),
            metrics: self.metrics.clone(),
            name: self.name,
        }
    }
}

struct RateLimit<S> {
    inner: S,
    bucket: Option<Arc<Bucket>>,
    metrics: Metrics,
    name: &'static str,
}

impl<S, B, R> Service<http::Request<B>> for RateLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
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
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.method().as_str().to_owned();
        let fut = self.inner.call(req);
        let (bucket, metrics, name) = (self.bucket.clone(), self.metrics.clone(), self.name);
        Box::pin(async move {
            if let Some(bucket) = bucket {
                let waited = Instant::now();
                bucket.acquire().await;
                metrics.api_rate_limited(name, &method, waited.elapsed());
            }
            let response = fut.await;
            let code = match &response {
                Ok(r) => r.status().as_str().to_owned(),
                Err(_) => "<error>".to_owned(),
            };
            metrics.api_request(name, &method, code);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_paces() {
        let b = Bucket::new(10.0, 3);
        let budget = ApiBudget(Some(Arc::new(Bucket::new(0.001, 4))));
        let bucket = budget.0.clone().unwrap();
        assert!(budget.is_ample());
        assert!(bucket.take().is_none() && bucket.take().is_none());
        assert!(budget.is_ample(), "half the burst left");
        assert!(bucket.take().is_none());
        assert!(!budget.is_ample(), "less than half left");
        assert!(ApiBudget::default().is_ample(), "unlimited");
        assert!((0..3).all(|_| b.take().is_none()));
        let wait = b.take().expect("burst used up");
        assert!(wait <= Duration::from_millis(100) && wait > Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_queued_request_spends_the_budget_until_dropped() {
        use futures_util::FutureExt;
        let budget = ApiBudget(Some(Arc::new(Bucket::new(0.001, 1))));
        let b = budget.0.clone().unwrap();
        assert!(b.take().is_none());
        let mut queued = Box::pin(b.acquire());
        assert!((&mut queued).now_or_never().is_none(), "no token for ~1000 s");
        assert_eq!(b.waiting.load(Ordering::Relaxed), 1);
        assert!(!budget.is_ample());
        drop(queued);
        assert_eq!(b.waiting.load(Ordering::Relaxed), 0);
    }
}
