FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY deidplatform deidplatform
COPY ratings ratings
COPY models_app models_app
RUN pip install --no-cache-dir "setuptools<81" && pip install --no-cache-dir .
COPY . .
RUN useradd --create-home deid && mkdir -p /data && chown deid /data
USER deid
EXPOSE 8000
