#!/bin/sh
# Create the artifact bucket if it is missing, then start the tracking server.
# Settings: MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_BUCKET, MLFLOW_S3_ENDPOINT_URL,
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, MLFLOW_ALLOWED_HOSTS.
set -eu
python - <<'PY'
import os, time
import boto3
from botocore.exceptions import ClientError, EndpointConnectionError

bucket = os.environ.get("MLFLOW_ARTIFACTS_BUCKET", "mlflow")
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
for attempt in range(30):  # MinIO may still be starting
    try:
        s3.head_bucket(Bucket=bucket)
        break
    except ClientError:
        s3.create_bucket(Bucket=bucket)
        break
    except EndpointConnectionError:
        time.sleep(2)
else:
    raise SystemExit(f"no S3 endpoint at {os.environ['MLFLOW_S3_ENDPOINT_URL']}")
PY
exec mlflow server --host 0.0.0.0 --port 5000 --workers 2 \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "s3://${MLFLOW_ARTIFACTS_BUCKET:-mlflow}" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:5000,127.0.0.1,127.0.0.1:5000}"
