#include "demo.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "../kernels/kern.h"
#include "buf.h"
#include "st.h"

void rfs_demo_default(struct rfs_demo_cfg *c)
{
	c->hidden = 512;
	c->intermediate = 1376;
	c->layers = 6;
	c->heads = 8;
	c->kv_heads = 4;
	c->vocab = 8000;
	c->added = 8;
	c->seed = 20241126;
}

struct dt { /* a demo tensor */
	char name[96];
	unsigned ndim;
	uint64_t shape[2];
	int norm; /* a norm weight: values near 1 */
};

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static float uniform(uint64_t *s) /* [-1, 1) */
{
	return (float)((double)(splitmix(s) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static int cmp_dt(const void *a, const void *b)
{
	return strcmp(((const struct dt *)a)->name, ((const struct dt *)b)->name);
}

static size_t list_tensors(const struct rfs_demo_cfg *c, struct dt *t, unsigned vocab)
{
	unsigned hd = c->hidden / c->heads, kv = hd * c->kv_heads, l;
	size_t n = 0;

#define T2(nm, a, b) do { snprintf(t[n].name, sizeof(t[n].name), "%s", nm); \
	t[n].ndim = 2; t[n].shape[0] = (a); t[n].shape[1] = (b); t[n].norm = 0; n++; } while (0)
#define T1(nm, a) do { snprintf(t[n].name, sizeof(t[n].name), "%s", nm); \
	t[n].ndim = 1; t[n].shape[0] = (a); t[n].shape[1] = 1; t[n].norm = 1; n++; } while (0)
	T2("model.embed_tokens.weight", vocab, c->hidden);
	T2("lm_head.weight", vocab, c->hidden);
	T1("model.norm.weight", c->hidden);
	for (l = 0; l < c->layers; l++) {
		char nm[96];

#define L(suffix) (snprintf(nm, sizeof(nm), "model.layers.%u.%s", l, suffix), nm)
		T1(L("input_layernorm.weight"), c->hidden);
		T1(L("post_attention_layernorm.weight"), c->hidden);
		T2(L("self_attn.q_proj.weight"), c->hidden, c->hidden);
		T2(L("self_attn.k_proj.weight"), kv, c->hidden);
		T2(L("self_attn.v_proj.weight"), kv, c->hidden);
		T2(L("self_attn.o_proj.weight"), c->hidden, c->hidden);
		T2(L("mlp.gate_proj.weight"), c->intermediate, c->hidden);
		T2(L("mlp.up_proj.weight"), c->intermediate, c->hidden);
		T2(L("mlp.down_proj.weight"), c->hidden, c->intermediate);
#undef L
	}
#undef T1
#undef T2
	qsort(t, n, sizeof(*t), cmp_dt);
	return n;
}

static uint64_t numel(const struct dt *t)
{
	return t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
}

/* Values of a tensor: base rows from one stream; the instruct adds a small
 * perturbation from another; rows past the base vocabulary are new. */
static void fill(const struct rfs_demo_cfg *c, const struct dt *t, int instruct,
		 unsigned base_rows, uint16_t *out)
{
	uint64_t s = c->seed ^ XXH3_64bits(t->name, strlen(t->name));
	uint64_t p = s ^ 0xA5A5A5A5DEADBEEFull;
	uint64_t n = numel(t), cols = t->ndim == 2 ? t->shape[1] : 1, i;
	float scale = t->norm ? 0.05f : 0.04f;

	for (i = 0; i < n; i++) {
		float v = (t->norm ? 1.0f : 0.0f) + scale * uniform(&s);

		v = rfs_bf16_to_f32(rfs_f32_to_bf16(v));
		if (instruct) {
			if (t->ndim == 2 && i / cols >= base_rows)
				v = 0.04f * uniform(&p); /* a new token's row */
			else
				v = v + 0.004f * uniform(&p);
		}
		out[i] = rfs_f32_to_bf16(v);
	}
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int write_text(const char *dir, const char *name, const char *text, struct rfs_err *err)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return rfs_errsys(err, "%s: cannot create", path);
	if (write_all(fd, text, strlen(text)) || close(fd))
		return rfs_errsys(err, "%s: cannot write", path);
	return 0;
}

/* Writes tensors [from, to) of @t as one safetensors file. */
static int write_st(const char *path, const struct rfs_demo_cfg *c, const struct dt *t,
		    size_t from, size_t to, int instruct, unsigned base_vocab, struct rfs_err *err)
{
	struct rfs_st_out *o = calloc(to - from, sizeof(*o));
	struct rfs_st_meta meta = { "format", "pt" };
	uint64_t pos = 0;
	char *hdr = NULL;
	size_t hlen, i;
	unsigned char lenb[8];
	int fd = -1, ret = 0, k;

	if (!o)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	for (i = from; i < to; i++) {
		o[i - from].name = t[i].name;
		o[i - from].dtype = RFS_DT_BF16;
		o[i - from].ndim = t[i].ndim;
		o[i - from].shape = t[i].shape;
		o[i - from].begin = pos;
		pos += numel(&t[i]) * 2;
		o[i - from].end = pos;
	}
	ret = rfs_st_header_write(o, to - from, &meta, 1, 1, &hdr, &hlen, err);
	if (ret)
		goto out;
	for (k = 0; k < 8; k++)
		lenb[k] = (unsigned char)((uint64_t)hlen >> (8 * k));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, lenb, 8) || write_all(fd, hdr, hlen)) {
		ret = rfs_errsys(err, "%s: cannot write", path);
		goto out;
	}
	for (i = from; i < to; i++) {
		uint16_t *v = malloc(numel(&t[i]) * 2);

		if (!v) {
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			goto out;
		}
		fill(c, &t[i], instruct, base_vocab, v);
		if (write_all(fd, v, numel(&t[i]) * 2)) {
			free(v);
			ret = rfs_errsys(err, "%s: cannot write", path);
			goto out;
		}
		free(v);
	}
	if (close(fd)) {
		fd = -1;
		ret = rfs_errsys(err, "%s: cannot write", path);
		goto out;
	}
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	free(hdr);
	free(o);
	return ret;
}

static char *config_json(const struct rfs_demo_cfg *c, unsigned vocab)
{
	struct rfs_buf b = { 0 };

	rfs_buf_addf(&b,
		     "{\n  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n"
		     "  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n"
		     "  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"head_dim\": %u,\n"
		     "  \"hidden_act\": \"silu\",\n  \"hidden_size\": %u,\n"
		     "  \"initializer_range\": 0.02,\n  \"intermediate_size\": %u,\n"
		     "  \"max_position_embeddings\": 2048,\n  \"mlp_bias\": false,\n"
		     "  \"model_type\": \"llama\",\n  \"num_attention_heads\": %u,\n"
		     "  \"num_hidden_layers\": %u,\n  \"num_key_value_heads\": %u,\n"
		     "  \"pretraining_tp\": 1,\n  \"rms_norm_eps\": 1e-05,\n"
		     "  \"rope_scaling\": null,\n  \"rope_theta\": 10000.0,\n"
		     "  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"bfloat16\",\n"
		     "  \"use_cache\": true,\n  \"vocab_size\": %u\n}\n",
		     c->hidden / c->heads, c->hidden, c->intermediate, c->heads, c->layers,
		     c->kv_heads, vocab);
	return rfs_buf_ok(&b) ? rfs_buf_detach(&b, NULL) : (rfs_buf_release(&b), NULL);
}

static const char *const added_names[] = {
	"<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>",
	"<|assistant|>", "<|tool|>", "<|pad|>", "<|sep|>",
};

static void added_token(struct rfs_buf *b, unsigned id, const char *content, int first)
{
	rfs_buf_addf(b, "%s\n    {\n      \"id\": %u,\n      \"content\": ", first ? "" : ",", id);
	rfs_buf_add_json_str(b, content);
	rfs_buf_adds(b, ",\n      \"single_word\": false,\n      \"lstrip\": false,\n"
		     "      \"rstrip\": false,\n      \"normalized\": false,\n      \"special\": true\n    }");
}

static char *tokenizer_json(const struct rfs_demo_cfg *c, unsigned added)
{
	struct rfs_buf b = { 0 };
	unsigned i;

	rfs_buf_adds(&b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n"
		     "  \"added_tokens\": [");
	added_token(&b, 0, "<unk>", 1);
	added_token(&b, 1, "<s>", 0);
	added_token(&b, 2, "</s>", 0);
	for (i = 0; i < added; i++)
		added_token(&b, c->vocab + i, added_names[i % 8], 0);
	rfs_buf_adds(&b, "\n  ],\n  \"normalizer\": null,\n"
		     "  \"pre_tokenizer\": {\n    \"type\": \"Whitespace\"\n  },\n"
		     "  \"post_processor\": null,\n  \"decoder\": null,\n"
		     "  \"model\": {\n    \"type\": \"WordLevel\",\n    \"vocab\": {\n"
		     "      \"<unk>\": 0,\n      \"<s>\": 1,\n      \"</s>\": 2");
	for (i = 3; i < c->vocab; i++)
		rfs_buf_addf(&b, ",\n      \"w%u\": %u", i, i);
	rfs_buf_adds(&b, "\n    },\n    \"unk_token\": \"<unk>\"\n  }\n}\n");
	return rfs_buf_ok(&b) ? rfs_buf_detach(&b, NULL) : (rfs_buf_release(&b), NULL);
}

static char *tokenizer_config(int instruct)
{
	struct rfs_buf b = { 0 };

	rfs_buf_adds(&b, "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n"
		     "  \"unk_token\": \"<unk>\",\n  \"model_max_length\": 2048,\n"
		     "  \"clean_up_tokenization_spaces\": false,\n");
	if (instruct)
		rfs_buf_adds(&b, "  \"pad_token\": \"<|pad|>\",\n"
			     "  \"chat_template\": \"{% for message in messages %}<|im_start|> {{ message['role'] }} {{ message['content'] }} <|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}\",\n");
	rfs_buf_adds(&b, "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n");
	return rfs_buf_ok(&b) ? rfs_buf_detach(&b, NULL) : (rfs_buf_release(&b), NULL);
}

static int write_model_dir(const char *dir, const struct rfs_demo_cfg *c, int instruct,
			   struct rfs_err *err)
{
	unsigned vocab = c->vocab + (instruct ? c->added : 0);
	size_t cap = 3 + 9 * (size_t)c->layers, n, half, i;
	struct dt *t = calloc(cap, sizeof(*t));
	char path[4096], *txt[3] = { 0 };
	int ret = 0;

	if (!t)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	if (mkdir(dir, 0755) && errno != EEXIST) {
		ret = rfs_errsys(err, "%s: cannot create", dir);
		goto out;
	}
	n = list_tensors(c, t, vocab);
	txt[0] = config_json(c, vocab);
	txt[1] = tokenizer_json(c, instruct ? c->added : 0);
	txt[2] = tokenizer_config(instruct);
	if (!txt[0] || !txt[1] || !txt[2]) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto out;
	}
	ret = write_text(dir, "config.json", txt[0], err);
	if (!ret)
		ret = write_text(dir, "tokenizer.json", txt[1], err);
	if (!ret)
		ret = write_text(dir, "tokenizer_config.json", txt[2], err);
	if (!ret)
		ret = write_text(dir, "special_tokens_map.json",
				 "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n  \"unk_token\": \"<unk>\"\n}\n",
				 err);
	if (!ret) {
		char gen[256];

		if (instruct)
			snprintf(gen, sizeof(gen), "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": [\n    2,\n    %u\n  ],\n  \"transformers_version\": \"4.46.0\"\n}\n", c->vocab + 1);
		else
			snprintf(gen, sizeof(gen), "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"transformers_version\": \"4.46.0\"\n}\n");
		ret = write_text(dir, "generation_config.json", gen, err);
	}
	if (ret)
		goto out;
	if (instruct) {
		snprintf(path, sizeof(path), "%s/model.safetensors", dir);
		ret = write_st(path, c, t, 0, n, 1, c->vocab, err);
		goto out;
	}
	/* the base: two shards and an index */
	half = n / 2;
	for (i = 0; i < 2 && !ret; i++) {
		snprintf(path, sizeof(path), "%s/model-0000%zu-of-00002.safetensors", dir, i + 1);
		ret = write_st(path, c, t, i ? half : 0, i ? n : half, 0, c->vocab, err);
	}
	if (!ret) {
		struct rfs_buf b = { 0 };
		uint64_t total = 0;

		for (i = 0; i < n; i++)
			total += numel(&t[i]) * 2;
		rfs_buf_addf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
			     (unsigned long long)total);
		for (i = 0; i < n; i++) {
			rfs_buf_addf(&b, "%s\n    ", i ? "," : "");
			rfs_buf_add_json_str(&b, t[i].name);
			rfs_buf_addf(&b, ": \"model-0000%d-of-00002.safetensors\"", i < half ? 1 : 2);
		}
		rfs_buf_adds(&b, "\n  }\n}\n");
		if (!rfs_buf_ok(&b))
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		else
			ret = write_text(dir, "model.safetensors.index.json", b.data, err);
		rfs_buf_release(&b);
	}
out:
	for (i = 0; i < 3; i++)
		free(txt[i]);
	free(t);
	return ret;
}

enum rfs_code rfs_demo_generate(const char *dir, const struct rfs_demo_cfg *c, struct rfs_err *err)
{
	char path[4096];
	int ret;

	if (c->added > 8 || !c->heads || c->hidden % c->heads || c->vocab < 8)
		return rfs_errf(err, RFS_E_RANGE, "demo: unusable model shape");
	snprintf(path, sizeof(path), "%s/base", dir);
	ret = write_model_dir(path, c, 0, err);
	if (ret)
		return ret;
	snprintf(path, sizeof(path), "%s/instruct", dir);
	return write_model_dir(path, c, 1, err);
}
