-- Retry classification and backoff: pure functions of tide.core.
local core = require "tide.core"

describe("core.classify_error", function()
  it("treats DynamoDB's throttling errors as throttled", function()
    for _, t in ipairs{ "ProvisionedThroughputExceededException", "ThrottlingException",
                        "RequestLimitExceeded", "LimitExceededException",
                        "com.amazonaws.dynamodb.v20120810#LimitExceededException",
                        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException" } do
      assert.equal("throttled", core.classify_error(400, t), t)
    end
    assert.equal("throttled", core.classify_error(429))
  end)

  it("treats 5xx, service errors and network failures as transient", function()
    assert.equal("transient", core.classify_error(500))
    assert.equal("transient", core.classify_error(503, "ServiceUnavailable"))
    assert.equal("transient", core.classify_error(500, "com.amazon.coral.service#InternalServerError"))
    assert.equal("transient", core.classify_error(400, "TransactionInProgressException"))
    for _, kind in ipairs{ "reset", "timeout", "connect", "truncated", "send", "resolve" } do
      assert.equal("transient", core.classify_error(0, nil, kind), kind)
    end
  end)

  it("never retries definite answers or configuration errors", function()
    for _, t in ipairs{ "ConditionalCheckFailedException", "ValidationException",
                        "ResourceNotFoundException", "TransactionCanceledException",
                        "AccessDeniedException", "UnrecognizedClientException", "SomethingNew" } do
      assert.equal("never", core.classify_error(400, t), t)
    end
    assert.equal("never", core.classify_error(404))
    assert.equal("never", core.classify_error(0, nil, "url"))
    assert.equal("never", core.classify_error(0, nil, "tls"))
  end)

  it("shortens namespaced error types", function()
    assert.equal("ValidationException",
                 core.short_error_type("com.amazon.coral.validate#ValidationException"))
    assert.equal("Plain", core.short_error_type("Plain"))
  end)
end)

describe("core.backoff", function()
  it("is full jitter under a doubling ceiling", function()
    assert.equal(0, core.backoff(0, 0.1, 5, 0))
    assert.near(0.05, core.backoff(0, 0.1, 5, 0.5), 1e-12)
    assert.near(0.2, core.backoff(2, 0.1, 5, 0.5), 1e-12)
    assert.near(0.8 * 0.999, core.backoff(3, 0.1, 5, 0.999), 1e-12)
  end)

  it("never exceeds the cap, even for huge attempt counts", function()
    for _, attempt in ipairs{ 10, 64, 1000, 100000 } do
      local d = core.backoff(attempt, 0.1, 5, 0.999999)
      assert.is_true(d <= 5 and d >= 4.99, tostring(d))
    end
  end)

  it("rejects out-of-range arguments", function()
    assert.has_error(function() core.backoff(-1, 0.1, 5, 0.5) end)
    assert.has_error(function() core.backoff(1, 0.1, 5, 1) end)
    assert.has_error(function() core.backoff("x", 0.1, 5, 0.5) end)
  end)
end)

describe("core.random_hex", function()
  it("gives distinct tokens of the asked length", function()
    local a, b = core.random_hex(16), core.random_hex(16)
    assert.equal(32, #a)
    assert.matches("^%x+$", a)
    assert.are_not.equal(a, b)
    assert.has_error(function() core.random_hex(0) end)
  end)
end)
