"""What bench/dynamodb_local_ceiling.py and dynamodb_local_concurrency.py
share: a botocore client of DynamoDB Local, its java process's CPU time,
and tables and items shaped as tide's events table (stream, version; a
Deposited event's attributes and ~300 bytes of metadata)."""
import os

import botocore.session

META = '{"causation_id":null,"command":"Deposit","command_id":"' + "f" * 32 + '","correlation_id":"' + "f" * 32 \
    + '","count":1,"handler":"' + "0" * 16 + '","index":1,"schema":1,"timestamp":1796600000000}'
# tide's append condition, and what a refused one returns
COND = {"ConditionExpression": "attribute_not_exists(#v)", "ExpressionAttributeNames": {"#v": "version"},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
TICK = os.sysconf("SC_CLK_TCK")


def client(endpoint):
    return botocore.session.get_session().create_client(
        "dynamodb", region_name="us-east-1", endpoint_url=endpoint,
        aws_access_key_id="tidebench", aws_secret_access_key="tidebenchsecret")


def cpu_seconds(pid):
    """User + system CPU seconds of process pid (/proc/PID/stat)."""
    with open("/proc/%s/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def item(stream, version, last):
    """An event item; last: the append's event count, on its last item."""
    it = {"stream": {"S": stream}, "version": {"N": str(version)}, "type": {"S": "Deposited"},
          "data": {"S": '{"amount":1}'}, "meta": {"S": META}}
    if last:
        it["last"] = {"N": str(last)}
    return it


def events_table(c, name, with_stream):
    """Creates an events-shaped table (with a NEW_IMAGE stream, as `tide init`
    makes it, when with_stream) and waits for it; -> name."""
    params = dict(TableName=name, BillingMode="PAY_PER_REQUEST",
                  KeySchema=[{"AttributeName": "stream", "KeyType": "HASH"},
                             {"AttributeName": "version", "KeyType": "RANGE"}],
                  AttributeDefinitions=[{"AttributeName": "stream", "AttributeType": "S"},
                                        {"AttributeName": "version", "AttributeType": "N"}])
    if with_stream:
        params["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    c.create_table(**params)
    c.get_waiter("table_exists").wait(TableName=name)
    return name
