"""listcon.pipeline: the data plane as plain functions and classes, one sub-package per stage
(data -> encoding -> store -> retrieval -> rerank / training -> evaluation). No Ray here:
the Ray callables are plain classes, and jobs/ runs them."""
