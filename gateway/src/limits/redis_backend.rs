//! The shared backend: the same GCRA buckets in Redis, one Lua script per admission and one
//! per settlement, so concurrent replicas never interleave a read and a write.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{
    Admission, Charged, Decided, KeyLimits, LimitKind, LimiterError, REDIS_TIMEOUT,
    RateLimitHeaders, WINDOW, gcra,
};

/// Microseconds in a window (the script works in Redis `TIME` microseconds).
const WINDOW_US: u64 = WINDOW.as_micros() as u64;

/// KEYS: requests bucket, tokens bucket. ARGV: request cost, token cost (each in µs; negative
/// when that limit is absent), window (µs). Returns {admitted, retry_after_us,
/// requests_backlog_us, tokens_backlog_us, refused_by (1 requests, 2 tokens)}.
///
/// TATs are written with `%.0f`: Lua's default number formatting keeps only 14 digits.
/// `replicate_commands` lets Redis < 5 accept writes after `TIME` (a no-op since Redis 5).
const ADMIT_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local request_cost = tonumber(ARGV[1])
local token_cost = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local function tat_of(key)
  local stored = redis.call('GET', key)
  if stored then
    local tat = tonumber(stored)
    if tat and tat > now then return tat end
  end
  return now
end
local requests_tat = now
local tokens_tat = now
local retry = 0
local refused_by = 0
if request_cost >= 0 then
  requests_tat = tat_of(KEYS[1])
  local over = requests_tat + request_cost - now - window
  if over > retry then retry = over; refused_by = 1 end
end
if token_cost >= 0 then
  tokens_tat = tat_of(KEYS[2])
  local over = tokens_tat + token_cost - now - window
  if over > retry then retry = over; refused_by = 2 end
end
if retry > 0 then
  return {0, retry, requests_tat - now, tokens_tat - now, refused_by}
end
if request_cost > 0 then
  requests_tat = requests_tat + request_cost
  redis.call('SET', KEYS[1], string.format('%.0f', requests_tat), 'PX', math.ceil((requests_tat - now) / 1000) + 1000)
end
if token_cost > 0 then
  tokens_tat = tokens_tat + token_cost
  redis.call('SET', KEYS[2], string.format('%.0f', tokens_tat), 'PX', math.ceil((tokens_tat - now) / 1000) + 1000)
end
return {1, 0, requests_tat - now, tokens_tat - now, 0}
";

/// KEYS: tokens bucket. ARGV: the correction in µs (positive charges, negative refunds).
const SETTLE_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local delta = tonumber(ARGV[1])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  local value = tonumber(stored)
  if value and value > now then tat = value end
end
if delta < 0 and tat <= now then return 0 end
local new_tat = tat + delta
if new_tat <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return new_tat - now
";

#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisCallError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply: {0}")]
    Reply(String),
}

pub(crate) struct RedisBackend {
    connection: ConnectionManager,
    admit_script: redis::Script,
    settle_script: redis::Script,
}

impl RedisBackend {
    pub(crate) async fn connect(url: &str) -> Result<Self, LimiterError> {
        let client = redis::Client::open(url)
            .map_err(|error| LimiterError::InvalidUrl(error.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(
            REDIS_TIMEOUT * 10,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| LimiterError::Connect(format!("no answer within {:?}", REDIS_TIMEOUT * 10)))?
        .map_err(|error| LimiterError::Connect(error.to_string()))?;
        Ok(RedisBackend {
            connection,
            admit_script: redis::Script::new(ADMIT_SCRIPT),
            settle_script: redis::Script::new(SETTLE_SCRIPT),
        })
    }

    pub(crate) async fn admit(
        &self,
        key_id: &str,
        limits: &KeyLimits,
        reserve: u64,
    ) -> Result<Decided, RedisCallError> {
        let request_cost = limits
            .requests_per_minute
            .map(|rpm| cost_arg(gcra::unit_cost(1, u64::from(rpm), WINDOW_US)))
            .unwrap_or(-1);
        let token_cost = limits
            .tokens_per_minute
            .map(|tpm| cost_arg(gcra::unit_cost(reserve, tpm, WINDOW_US)))
            .unwrap_or(-1);
        let (requests_key, tokens_key) = bucket_keys(key_id);
        let mut invocation = self.admit_script.prepare_invoke();
        invocation
            .key(requests_key)
            .key(tokens_key)
            .arg(request_cost)
            .arg(token_cost)
            .arg(WINDOW_US);
        let mut connection = self.connection.clone();
        let reply: Vec<i64> =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| RedisCallError::Timeout(REDIS_TIMEOUT))??;
        let [
            admitted,
            retry_us,
            requests_backlog_us,
            tokens_backlog_us,
            refused_by,
        ] = reply[..]
        else {
            return Err(RedisCallError::Reply(format!("{reply:?}")));
        };
        let headers = headers(
            limits,
            micros(requests_backlog_us),
            micros(tokens_backlog_us),
        );
        if admitted == 1 {
            let charged = if limits.tokens_per_minute.is_some() {
                Charged::Redis
            } else {
                Charged::Nothing
            };
            Ok(Decided::Allowed {
                admission: Admission {
                    key_id: Arc::from(key_id),
                    reserved_tokens: reserve,
                    tokens_per_minute: limits.tokens_per_minute,
                    charged,
                },
                headers,
            })
        } else {
            Ok(Decided::Limited {
                retry_after: Duration::from_micros(micros(retry_us)),
                headers,
                by: if refused_by == 2 {
                    LimitKind::tokens
                } else {
                    LimitKind::requests
                },
            })
        }
    }

    pub(crate) async fn settle(
        &self,
        key_id: &str,
        tokens_per_minute: u64,
        reserved: u64,
        actual: u64,
    ) -> Result<(), RedisCallError> {
        let delta = if actual > reserved {
            cost_arg(gcra::unit_cost(
                actual - reserved,
                tokens_per_minute,
                WINDOW_US,
            ))
        } else {
            -cost_arg(gcra::unit_cost(
                reserved - actual,
                tokens_per_minute,
                WINDOW_US,
            ))
        };
        if delta == 0 {
            return Ok(());
        }
        let (_, tokens_key) = bucket_keys(key_id);
        let mut invocation = self.settle_script.prepare_invoke();
        invocation.key(tokens_key).arg(delta);
        let mut connection = self.connection.clone();
        let _: i64 = tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| RedisCallError::Timeout(REDIS_TIMEOUT))??;
        Ok(())
    }
}

/// Both buckets of a key share a hash tag, so they live on one slot of a Redis cluster.
fn bucket_keys(key_id: &str) -> (String, String) {
    (
        format!("bud:ratelimit:{{{key_id}}}:requests"),
        format!("bud:ratelimit:{{{key_id}}}:tokens"),
    )
}

/// Costs beyond a few windows mean "never"; keep them well inside Lua's exact integers.
fn cost_arg(cost: u64) -> i64 {
    i64::try_from(cost.min(WINDOW_US * 1000)).unwrap_or(i64::MAX)
}

fn micros(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn headers(
    limits: &KeyLimits,
    requests_backlog_us: u64,
    tokens_backlog_us: u64,
) -> RateLimitHeaders {
    let requests = limits.requests_per_minute.map(|rpm| {
        let per_request = gcra::unit_cost(1, u64::from(rpm), WINDOW_US);
        let remaining = gcra::remaining(requests_backlog_us, 0, per_request, WINDOW_US);
        (rpm, u32::try_from(remaining).unwrap_or(rpm).min(rpm))
    });
    let tokens = limits.tokens_per_minute.map(|tpm| {
        let free = WINDOW_US.saturating_sub(tokens_backlog_us);
        let remaining = u128::from(free) * u128::from(tpm) / u128::from(WINDOW_US);
        (tpm, u64::try_from(remaining).unwrap_or(tpm).min(tpm))
    });
    RateLimitHeaders {
        limit_requests: requests.map(|(limit, _)| limit),
        remaining_requests: requests.map(|(_, remaining)| remaining),
        reset_requests: requests
            .map(|_| Duration::from_micros(requests_backlog_us))
            .unwrap_or_default(),
        limit_tokens: tokens.map(|(limit, _)| limit),
        remaining_tokens: tokens.map(|(_, remaining)| remaining),
        reset_tokens: tokens
            .map(|_| Duration::from_micros(tokens_backlog_us))
            .unwrap_or_default(),
    }
}
