# The S3/SQS emulator as a container, for the e2e tier: function containers reach it by name on
# a docker network the tests create. Built from the Lambda base stand-in with wheels prepared
# on the host (builds cannot download).
FROM public.ecr.aws/lambda/python:3.11
COPY wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels "moto[server,s3,sqs,dynamodb]==5.2.5" \
 && rm -rf /tmp/wheels
EXPOSE 5000
ENTRYPOINT ["/var/lang/bin/moto_server", "-H", "0.0.0.0", "-p", "5000"]
