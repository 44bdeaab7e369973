# One image for every orderfleet process: workers, beat, flower, migrations (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY models ./models
COPY tasks ./tasks
COPY worker ./worker
RUN pip install . && rm -rf build *.egg-info

# Celery refuses to be comfortable as root; beat keeps its schedule under the data dir.
RUN useradd --create-home --uid 10001 orderfleet
USER orderfleet
ENV ORDERFLEET_DATA_DIR=/home/orderfleet/data

CMD ["orderfleet", "--help"]
