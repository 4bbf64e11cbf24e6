"""Set up and read back moto's Firehose -> S3 path for switchyard's tests (boto3 ships with moto).

usage: moto_s3.py setup|dump ENDPOINT BUCKET STREAM
"""
import sys

import boto3

cmd, endpoint, bucket, stream = sys.argv[1:5]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
s3 = boto3.client("s3", **kw)
if cmd == "setup":
    s3.create_bucket(Bucket=bucket)
    boto3.client("firehose", **kw).create_delivery_stream(
        DeliveryStreamName=stream,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": "events/",
            # moto echoes only what it was given, and the Rust SDK requires these members
            # in DescribeDeliveryStream's answer (the readiness check).
            "CompressionFormat": "UNCOMPRESSED",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
            "EncryptionConfiguration": {"NoEncryptionConfig": "NoEncryption"},
        },
    )
elif cmd == "dump":
    # Every object's bytes, one after another (moto writes one object per PutRecordBatch).
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
else:
    sys.exit(f"unknown command {cmd}")
