-- account_events: every event of every account, published to the Kafka
-- topic `account-events` with tide's defaults (docs/projections.md,
-- "Sinks"): key = the stream id ("account#<id>"), so one account's events
-- stay on one partition in version order; value = the event as JSON
-- {"stream", "version", "type", "data", "meta"}; headers tide-stream,
-- tide-version, tide-type, tide-event-id, tide-correlation-id.
local account_events = {}

account_events.subscribe = { aggregates = { "account" } }

account_events.sink = { kind = "kafka", topic = "account-events" }

-- No `publish` function: every event goes out with the defaults. To shape
-- the messages, or skip some events, add one:
--
--   function account_events.publish(event)
--     if event.type == "Closed" then return nil end      -- not published
--     return { value = { id = event.id, type = event.type, amount = event.data.amount } }
--   end

return account_events
