/* pymsgr's CPython C-API module msgr._hotcall: the per-message work that cffi makes expensive.
 *
 * cffi converts every argument of every call (about 800 instructions a call plus about 190 an
 * argument) and cannot read or build Python objects, so the Python side had to unpack each
 * message into arguments and turn each result back into objects.  The functions here take the
 * objects themselves:
 *
 *   frame_burst   frames a run of small messages of a send turn into one bytearray, reading each
 *                 Message's header and segments directly (outq.Framer._frame_many);
 *   frame_one     a lone small message (a round trip's reply) and the cumulative ACK, as one bytes
 *                 (outq.Framer.frame_one);
 *   scan          the receive scanner of fastpath.c, its records returned as tuples
 *                 (msgr/_cwire.py scan / scan_pinned);
 *   message_init  Message.__init__ (the application thread builds one per message it sends).
 *
 * The wire layout is not written here: frame_layout.h and frame_out.c (msgr_frame_batch,
 * msgr_frame_one) and fastpath.c (msgr_scan_frames, the CRC) are compiled into this module too, so
 * the bytes are the cffi module's, and the pure framer's (tests/test_hotcall.py compares them).
 *
 * Speed comes from reading the messages' __slots__ in place: bind() resolves the member
 * descriptors of msgr.message.Message and msgr.wire.MsgHeader to offsets once, and a message class
 * is used that way only while it is a plain subclass: its slots are still Message's descriptors,
 * no __getattribute__/__setattr__ of its own, Message's _encode (checked per class, cached under
 * the class's version tag, which CPython renews on any change to the class or its bases).  The
 * limited API has no way to a slot but a named attribute lookup (about 120 instructions each,
 * some 20 a message), so this module is built against the full API of the running Python.
 *
 * Whatever is not that common case is left to the Python path: each function says "not mine"
 * (a return value) for a message it does not handle, before changing anything of it, and the
 * Python code frames it as before; errors raised by a message's own encode_payload are returned
 * to the caller as the message's error, as the Python framer returns them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

#include "fastpath.h"
#include "frame_layout.h"
#include "frame_out.h"

/* ---- what bind() resolved ---- */

enum { S_HEADER, S_FRONT, S_MIDDLE, S_DATA, S_FOOTER, S_CONNECTION, S_THROTTLED, S_ENCODED,
       S_RECV_STAMP, N_MSG_SLOTS };
static const char *const msg_slot_names[N_MSG_SLOTS] = {
    "header", "front", "middle", "data", "_footer", "_connection", "_throttled",
    "_encoded_features", "_recv_stamp_us"};

enum { H_SEQ, H_TID, H_TYPE, H_PRIORITY, H_VERSION, H_FRONT_LEN, H_MIDDLE_LEN, H_DATA_LEN,
       H_DATA_OFF, H_SRC_TYPE, H_SRC_NUM, H_COMPAT, H_RESERVED, H_CRC, N_HDR_SLOTS };
static const char *const hdr_slot_names[N_HDR_SLOTS] = {
    "seq", "tid", "type", "priority", "version", "front_len", "middle_len", "data_len",
    "data_off", "src_type", "src_num", "compat_version", "reserved", "crc"};

static PyTypeObject *message_type;        /* strong references, set by bind() */
static PyTypeObject *header_type;
static PyObject *msg_descr[N_MSG_SLOTS];  /* Message's member descriptors */
static PyObject *msg_slot_str[N_MSG_SLOTS];  /* their names, interned */
static Py_ssize_t msg_off[N_MSG_SLOTS];
static Py_ssize_t hdr_off[N_HDR_SLOTS];
static PyObject *encode_nothing;          /* Message.encode_payload */
static PyObject *encode_method;           /* Message._encode */
static PyObject *str_TYPE, *str_HEAD_VERSION, *str_COMPAT_VERSION, *str_encode_payload,
                *str__encode, *str___init__, *str_decode_payload;
static PyObject *init_descr;              /* the C Message.__init__ bind() made */
static PyObject *decode_nothing;          /* Message.decode_payload (bind_decode) */
static PyObject *registry;                /* msgr.message's type -> class dict */
static PyObject *py_decode;               /* msgr.message's Python decode_message */
static PyObject *int_zero, *int_minus_one, *empty_bytes, *empty_tuple;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* Store a new reference to v in a slot (what a member descriptor's set does). */
static inline void slot_put(PyObject *obj, Py_ssize_t off, PyObject *v)
{
    PyObject *old = SLOT(obj, off);
    Py_INCREF(v);
    SLOT(obj, off) = v;
    Py_XDECREF(old);
}

/* ---- per message class: may its slots be used in place? ---- */

typedef struct {
    PyTypeObject *tp;      /* identity only; valid while its version tag is `tag` */
    unsigned int tag;
    int direct;            /* Message's slots, generic attribute access, Message._encode */
    int plain_encode;      /* and encode_payload is Message's (nothing to encode) */
    int plain_build;       /* and object's __new__, Message's __init__, no decode_payload: a
                              received message is its slots set (decode_message's short way) */
} ClassInfo;

#define CLASS_CACHE 16
static ClassInfo class_cache[CLASS_CACHE];

/* Fills *ci for tp (never fails: a lookup that finds nothing is a "no"). */
static void class_info_fill(PyTypeObject *tp, ClassInfo *ci)
{
    ci->tp = tp;
    ci->direct = ci->plain_encode = 0;
    int direct = tp->tp_getattro == PyObject_GenericGetAttr && tp->tp_setattro == PyObject_GenericSetAttr;
    for (int i = 0; direct && i < N_MSG_SLOTS; i++)
        direct = _PyType_Lookup(tp, msg_slot_str[i]) == msg_descr[i];
    if (direct)
        direct = _PyType_Lookup(tp, str__encode) == encode_method;
    ci->direct = direct;
    ci->plain_encode = direct && _PyType_Lookup(tp, str_encode_payload) == encode_nothing;
    ci->plain_build = direct && tp->tp_new == PyBaseObject_Type.tp_new && init_descr != NULL
                      && _PyType_Lookup(tp, str___init__) == init_descr
                      && _PyType_Lookup(tp, str_decode_payload) == decode_nothing;
    /* _PyType_Lookup gave tp a version tag; a change to tp or a base clears it (a new one later) */
    ci->tag = (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? tp->tp_version_tag : 0;
}

/* The info of a Message subclass. */
static const ClassInfo *class_info(PyTypeObject *tp)
{
    ClassInfo *ci = &class_cache[((uintptr_t)tp >> 6) % CLASS_CACHE];
    if (ci->tp == tp && ci->tag != 0 && (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)
        && tp->tp_version_tag == ci->tag)
        return ci;
    class_info_fill(tp, ci);
    return ci;   /* a tag of 0 (none could be given) is never a hit: filled again next time */
}

/* The exception being raised, taken (a new reference to the instance, traceback attached). */
static PyObject *fetch_error(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* ---- reading header fields ---- */

/* An int field as u64; 0 when it is not an int in [0, max] (the Python path then reports it). */
static inline int field_u64(PyObject *v, uint64_t max, uint64_t *out)
{
    if (v == NULL || !PyLong_Check(v))
        return 0;
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (x > max)
        return 0;
    *out = x;
    return 1;
}

/* What framing one message needs, read from it (strong references). */
typedef struct {
    PyObject *msg, *hdr, *seg[3];
    PyObject *type_obj;     /* the class's TYPE when it replaces header.type, else NULL */
    PyObject *compat_obj;   /* header.version when compat_version was 0, else NULL */
    Py_ssize_t len[3];
    uint64_t f[MSGR_FRAME_FIELDS];
} Item;

static void item_clear(Item *it)
{
    Py_CLEAR(it->msg);
    Py_CLEAR(it->hdr);
    for (int k = 0; k < 3; k++)
        Py_CLEAR(it->seg[k]);
    Py_CLEAR(it->type_obj);
    Py_CLEAR(it->compat_obj);
}

static inline const char *seg_ptr(PyObject *s)
{
    return PyBytes_CheckExact(s) ? PyBytes_AS_STRING(s) : PyByteArray_AS_STRING(s);
}

static inline Py_ssize_t seg_len(PyObject *s)
{
    return PyBytes_CheckExact(s) ? PyBytes_GET_SIZE(s) : PyByteArray_GET_SIZE(s);
}

/* Encode msg for `features` (Message._encode's first half) and read what framing it needs.
 * 1: *it is filled; 0: the Python path frames this message (nothing of it changed, except that
 * it may be encoded, which the Python path does again as a no-op); -1: an exception is set
 * (its encode_payload raised, or no memory), nothing of it framed. */
static int prepare(PyObject *msg, PyObject *features, Py_ssize_t inline_max, Item *it)
{
    memset(it, 0, sizeof *it);
    if (!PyObject_TypeCheck(msg, message_type))
        return 0;
    const ClassInfo *ci = class_info(Py_TYPE(msg));
    if (!ci->direct)
        return 0;
    PyObject *enc = SLOT(msg, msg_off[S_ENCODED]);
    if (enc == NULL)
        return 0;
    if (enc != features) {
        /* None (never encoded) is never equal to the features int: no rich compare for it */
        int same = enc == Py_None ? 0 : PyObject_RichCompareBool(enc, features, Py_EQ);
        if (same < 0)
            return -1;
        if (!same) {
            if (ci->plain_encode) {
                slot_put(msg, msg_off[S_ENCODED], features);
            } else {
                PyObject *r = PyObject_CallMethodOneArg(msg, str__encode, features);
                if (r == NULL)
                    return -1;
                Py_DECREF(r);
            }
        }
    }
    /* _encode's second half: header.type from the class, the lengths, compat_version. TYPE first:
     * reading it may run Python code, nothing after it does until the item holds its references */
    PyObject *t = PyObject_GetAttr(msg, str_TYPE);   /* self.TYPE, as _encode reads it */
    if (t == NULL)
        return -1;
    int truthy = PyObject_IsTrue(t);
    if (truthy < 0) {
        Py_DECREF(t);
        return -1;
    }
    PyObject *hdr = SLOT(msg, msg_off[S_HEADER]);
    Py_ssize_t body = 0;
    int mine = hdr != NULL && Py_TYPE(hdr) == header_type;
    for (int k = 0; mine && k < 3; k++) {
        PyObject *s = SLOT(msg, msg_off[S_FRONT + k]);
        mine = s != NULL && (PyBytes_CheckExact(s) || PyByteArray_CheckExact(s));
        if (mine) {
            it->len[k] = seg_len(s);
            body += it->len[k];
        }
    }
    if (!mine || body > inline_max) {
        Py_DECREF(t);
        return 0;
    }
    PyObject *type_v = truthy ? t : SLOT(hdr, hdr_off[H_TYPE]);
    uint64_t *f = it->f;
    PyObject *compat = SLOT(hdr, hdr_off[H_COMPAT]);
    PyObject *version = SLOT(hdr, hdr_off[H_VERSION]);
    int ok = field_u64(SLOT(hdr, hdr_off[H_TID]), UINT64_MAX, &f[1])
             && field_u64(type_v, 0xFFFF, &f[2])
             && field_u64(SLOT(hdr, hdr_off[H_PRIORITY]), 0xFFFF, &f[3])
             && field_u64(version, 0xFFFF, &f[4])
             && field_u64(SLOT(hdr, hdr_off[H_DATA_OFF]), 0xFFFF, &f[5])
             && field_u64(compat, 0xFFFF, &f[6])
             && field_u64(SLOT(hdr, hdr_off[H_RESERVED]), 0xFFFF, &f[7]);
    if (!ok) {
        Py_DECREF(t);
        return 0;
    }
    if (f[6] == 0) {          /* `if h.compat_version == 0: h.compat_version = h.version` */
        f[6] = f[4];
        Py_INCREF(version);
        it->compat_obj = version;
    }
    if (truthy)
        it->type_obj = t;     /* the reference moves to the item */
    else
        Py_DECREF(t);
    f[8] = (uint64_t)it->len[0];
    f[9] = (uint64_t)it->len[1];
    f[10] = (uint64_t)it->len[2];
    Py_INCREF(msg);
    it->msg = msg;
    Py_INCREF(hdr);
    it->hdr = hdr;
    for (int k = 0; k < 3; k++) {
        it->seg[k] = SLOT(msg, msg_off[S_FRONT + k]);
        Py_INCREF(it->seg[k]);
    }
    return 1;
}

/* Re-read a segment's pointer after Python code may have run: NULL (RuntimeError set) when a
 * bytearray segment changed size since it was measured. */
static const char *seg_again(PyObject *s, Py_ssize_t len)
{
    if (seg_len(s) != len) {
        PyErr_SetString(PyExc_RuntimeError, "a message segment changed size while it was framed");
        return NULL;
    }
    return seg_ptr(s);
}

/* The header fields a framed message gets (what the Python framer sets). */
typedef struct {
    Py_ssize_t len;
    PyObject *obj;
} LenCache;

static PyObject *len_obj(LenCache *lc, Py_ssize_t n)
{
    if (lc->obj == NULL || lc->len != n) {
        PyObject *o = PyLong_FromSsize_t(n);
        if (o == NULL)
            return NULL;
        Py_XSETREF(lc->obj, o);
        lc->len = n;
    }
    return lc->obj;
}

static int set_sent(const Item *it, uint64_t seq, PyObject *src_type, PyObject *src_num, LenCache *lc)
{
    PyObject *h = it->hdr;
    PyObject *s = PyLong_FromUnsignedLongLong(seq);
    if (s == NULL)
        return -1;
    if (it->type_obj != NULL)
        slot_put(h, hdr_off[H_TYPE], it->type_obj);
    for (int k = 0; k < 3; k++) {
        PyObject *n = len_obj(&lc[k], it->len[k]);
        if (n == NULL) {
            Py_DECREF(s);
            return -1;
        }
        slot_put(h, hdr_off[H_FRONT_LEN + k], n);
    }
    if (it->compat_obj != NULL)
        slot_put(h, hdr_off[H_COMPAT], it->compat_obj);
    slot_put(h, hdr_off[H_SRC_TYPE], src_type);
    slot_put(h, hdr_off[H_SRC_NUM], src_num);
    slot_put(h, hdr_off[H_SEQ], s);
    Py_DECREF(s);
    return 0;
}

/* conf: (features, src_type, src_num, src_num as u64, flags, INLINE_MAX, RUN_MAX_BYTES) of one
 * Framer (its _hot). */
typedef struct {
    PyObject *features, *src_type, *src_num;
    uint8_t src_type_u8;
    uint64_t src_num_u;
    uint32_t flags;
    Py_ssize_t inline_max, run_max;
} Conf;

static int conf_read(PyObject *conf, Conf *c)
{
    if (!PyTuple_CheckExact(conf) || PyTuple_GET_SIZE(conf) != 7) {
        PyErr_SetString(PyExc_TypeError, "conf must be a 7-tuple (Framer._hot)");
        return -1;
    }
    c->inline_max = PyLong_AsSsize_t(PyTuple_GET_ITEM(conf, 5));
    if (c->inline_max == -1 && PyErr_Occurred())
        return -1;
    c->run_max = PyLong_AsSsize_t(PyTuple_GET_ITEM(conf, 6));
    if (c->run_max == -1 && PyErr_Occurred())
        return -1;
    c->features = PyTuple_GET_ITEM(conf, 0);
    c->src_type = PyTuple_GET_ITEM(conf, 1);
    c->src_num = PyTuple_GET_ITEM(conf, 2);
    uint64_t st;
    if (!field_u64(c->src_type, 0xFF, &st)) {
        PyErr_SetString(PyExc_OverflowError, "src_type out of range");
        return -1;
    }
    c->src_type_u8 = (uint8_t)st;
    c->src_num_u = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(conf, 3));
    if (c->src_num_u == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    unsigned long fl = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(conf, 4));
    if (fl == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    c->flags = (uint32_t)fl;
    return 0;
}

#define SLOT_BYTES (1 + MSGR_HEADER_SIZE + MSGR_FOOTER_SIZE)   /* outq._SLOT */
/* a run at least this big is framed (CRCs) with the GIL released */
#define NOGIL_MIN (1 << 20)

/* frame_burst(conf, msgs, start, seq, out) -> (n, buf, error)
 *
 * Frames msgs[start:] into one bytearray, appended to `out`, with seqs seq + 1, seq + 2, ... as
 * Framer._frame_many's runs do: small messages (body up to INLINE_MAX, bytes/bytearray segments)
 * until the run passes RUN_MAX_BYTES.  n: how many it framed (buf is the bytearray, or None when
 * n is 0); error: the exception msgs[start + n]'s encode_payload raised, else None.  n == 0 and no
 * error: msgs[start] is not one this function frames (big, a view, not a plain Message, a field out
 * of range): the Python path frames it. */
static PyObject *frame_burst(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5 || !PyList_CheckExact(args[1]) || !PyList_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError, "frame_burst(conf, msgs: list, start, seq, out: list)");
        return NULL;
    }
    if (message_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "msgr._hotcall.bind() was not called");
        return NULL;
    }
    Conf c;
    if (conf_read(args[0], &c) < 0)
        return NULL;
    PyObject *msgs = args[1], *out = args[4];
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    uint64_t seq = PyLong_AsUnsignedLongLong(args[3]);
    if (seq == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "start must be >= 0");
        return NULL;
    }
    const size_t flen = (c.flags & MSGR_SCAN_NEW_FOOTER) ? MSGR_FOOTER_SIZE : MSGR_FOOTER_OLD_SIZE;

    Py_ssize_t cap = 0, n = 0, run_bytes = 0;
    size_t size = 0;
    Item *items = NULL;
    uint64_t *fields = NULL;
    PyObject *err = NULL, *buf = NULL, *result = NULL;
    for (Py_ssize_t i = start; i < PyList_GET_SIZE(msgs); i++) {   /* the list may change size */
        if (n == cap) {
            Py_ssize_t ncap = cap ? 2 * cap : 32;
            Item *ni = PyMem_Realloc(items, (size_t)ncap * sizeof(Item));
            if (ni == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            items = ni;
            cap = ncap;
        }
        if (seq > UINT64_MAX - 1 - (uint64_t)n)   /* its seq would not fit: the Python path says so */
            break;
        PyObject *msg = PyList_GET_ITEM(msgs, i);
        Py_INCREF(msg);
        int r = prepare(msg, c.features, c.inline_max, &items[n]);
        Py_DECREF(msg);
        if (r < 0) {
            err = fetch_error();
            break;
        }
        if (r == 0)
            break;
        const Item *it = &items[n++];
        const Py_ssize_t body = it->len[0] + it->len[1] + it->len[2];
        size += 1 + MSGR_HEADER_SIZE + (size_t)body + flen;
        run_bytes += body + SLOT_BYTES;
        if (run_bytes > c.run_max)
            break;
    }
    if (n == 0) {
        result = PyTuple_Pack(3, int_zero, Py_None, err ? err : Py_None);
        goto done;
    }
    buf = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)size);
    fields = PyMem_Malloc((size_t)n * MSGR_FRAME_FIELDS * sizeof(uint64_t));
    if (buf == NULL || fields == NULL) {
        if (fields == NULL)
            PyErr_NoMemory();
        goto fail;
    }
    /* the payloads into place, nothing Python between reading a pointer and its copy */
    char *p = PyByteArray_AS_STRING(buf);
    for (Py_ssize_t k = 0; k < n; k++) {
        Item *it = &items[k];
        it->f[0] = seq + 1 + (uint64_t)k;
        memcpy(fields + (size_t)k * MSGR_FRAME_FIELDS, it->f, sizeof it->f);
        p += 1 + MSGR_HEADER_SIZE;
        for (int s = 0; s < 3; s++) {
            if (!it->len[s])
                continue;
            const char *src = seg_again(it->seg[s], it->len[s]);
            if (src == NULL)
                goto fail;
            memcpy(p, src, (size_t)it->len[s]);
            p += it->len[s];
        }
        p += flen;
    }
    int64_t framed;
    if (size >= NOGIL_MIN) {
        char *b = PyByteArray_AS_STRING(buf);   /* ours alone: no one else can see it yet */
        Py_BEGIN_ALLOW_THREADS
        framed = msgr_frame_batch(b, size, fields, (uint32_t)n, c.src_type_u8, c.src_num_u, c.flags);
        Py_END_ALLOW_THREADS
    } else {
        framed = msgr_frame_batch(PyByteArray_AS_STRING(buf), size, fields, (uint32_t)n, c.src_type_u8,
                                  c.src_num_u, c.flags);
    }
    if (framed != n) {   /* fields were range-checked by prepare(): cannot happen */
        PyErr_SetString(PyExc_SystemError, "msgr_frame_batch refused a checked run");
        goto fail;
    }
    LenCache lc[3] = {{0, NULL}, {0, NULL}, {0, NULL}};
    int bad = 0;
    for (Py_ssize_t k = 0; k < n && !bad; k++)
        bad = set_sent(&items[k], seq + 1 + (uint64_t)k, c.src_type, c.src_num, lc) < 0;
    for (int s = 0; s < 3; s++)
        Py_XDECREF(lc[s].obj);
    if (bad || PyList_Append(out, buf) < 0)
        goto fail;
    PyObject *nobj = PyLong_FromSsize_t(n);
    if (nobj == NULL)
        goto fail;
    result = PyTuple_Pack(3, nobj, buf, err ? err : Py_None);
    Py_DECREF(nobj);
    goto done;
fail:
    result = NULL;
done:
    for (Py_ssize_t k = 0; k < n; k++)
        item_clear(&items[k]);
    PyMem_Free(items);
    PyMem_Free(fields);
    Py_XDECREF(buf);
    Py_XDECREF(err);
    return result;
}

/* frame_one(conf, msg, seq, ack) -> bytes | exception | None
 *
 * A lone small message (Framer.frame_one: a round trip's reply) framed with seq + 1, followed by
 * a cumulative ACK of `ack` when it is not 0, as one new bytes.  An exception instance: the one
 * its encode_payload raised (nothing framed).  None: not one this function frames (see
 * frame_burst); the Python path frames it. */
static PyObject *frame_one(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "frame_one(conf, msg, seq, ack)");
        return NULL;
    }
    if (message_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "msgr._hotcall.bind() was not called");
        return NULL;
    }
    Conf c;
    if (conf_read(args[0], &c) < 0)
        return NULL;
    uint64_t seq = PyLong_AsUnsignedLongLong(args[2]);
    if (seq == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    uint64_t ack = PyLong_AsUnsignedLongLong(args[3]);
    if (ack == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    if (seq == UINT64_MAX)   /* its seq would not fit: the Python path says so */
        Py_RETURN_NONE;
    Item it;
    int r = prepare(args[1], c.features, c.inline_max, &it);
    if (r < 0)
        return fetch_error();
    if (r == 0)
        Py_RETURN_NONE;
    const size_t flen = (c.flags & MSGR_SCAN_NEW_FOOTER) ? MSGR_FOOTER_SIZE : MSGR_FOOTER_OLD_SIZE;
    const size_t body = (size_t)(it.len[0] + it.len[1] + it.len[2]);
    const size_t total = 1 + MSGR_HEADER_SIZE + body + flen + (ack ? 9 : 0);
    PyObject *res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    LenCache lc[3] = {{0, NULL}, {0, NULL}, {0, NULL}};
    if (res == NULL)
        goto fail;
    const char *seg[3];
    for (int s = 0; s < 3; s++) {
        seg[s] = seg_again(it.seg[s], it.len[s]);
        if (seg[s] == NULL)
            goto fail;
    }
    const uint64_t *f = it.f;
    int64_t n = msgr_frame_one(PyBytes_AS_STRING(res), total, 0, seq + 1, f[1], f[2], f[3], f[4], f[5],
                               f[6], f[7], c.src_type_u8, c.src_num_u, seg[0], (size_t)it.len[0], seg[1],
                               (size_t)it.len[1], seg[2], (size_t)it.len[2], ack, c.flags);
    if (n != (int64_t)total) {   /* range-checked by prepare(): cannot happen */
        PyErr_SetString(PyExc_SystemError, "msgr_frame_one refused a checked message");
        goto fail;
    }
    if (set_sent(&it, seq + 1, c.src_type, c.src_num, lc) < 0)
        goto fail;
    for (int s = 0; s < 3; s++)
        Py_XDECREF(lc[s].obj);
    item_clear(&it);
    return res;
fail:
    for (int s = 0; s < 3; s++)
        Py_XDECREF(lc[s].obj);
    item_clear(&it);
    Py_XDECREF(res);
    return NULL;
}

/* ---- the receive scanner ---- */

#define SCAN_STACK_FRAMES 64
/* ints 0..255 (most record slots: tags, small lengths, header fields, zeros), made once */
#define SMALL_INTS 256
static PyObject *small_ints[SMALL_INTS];

/* The records of msgr_scan_frames as a list of MSGR_SCAN_SLOTS-tuples (slot 13, src_num, signed). */
static PyObject *records(const uint64_t *recs, uint64_t n)
{
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL)
        return NULL;
    PyObject *prev_t = NULL;
    for (uint64_t i = 0; i < n; i++) {
        const uint64_t *r = recs + i * MSGR_SCAN_SLOTS;
        const uint64_t *prev = i ? r - MSGR_SCAN_SLOTS : NULL;
        PyObject *t = PyTuple_New(MSGR_SCAN_SLOTS);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
        for (int k = 0; k < MSGR_SCAN_SLOTS; k++) {
            /* a value the record before had in this slot (lengths, types, CRCs of a run of alike
               messages): its int again, not a new one */
            PyObject *v = r[k] < SMALL_INTS ? Py_NewRef(small_ints[r[k]])
                : prev != NULL && prev[k] == r[k] ? Py_NewRef(PyTuple_GET_ITEM(prev_t, k))
                : k == 13 ? PyLong_FromLongLong((long long)r[k]) : PyLong_FromUnsignedLongLong(r[k]);
            if (v == NULL) {
                Py_DECREF(list);
                return NULL;
            }
            PyTuple_SET_ITEM(t, k, v);
        }
        prev_t = t;
    }
    return list;
}

static PyObject *scan_buffer(const char *p, Py_ssize_t size, Py_ssize_t offset, PyObject *end_obj,
                             uint32_t flags, uint64_t max_inline, Py_ssize_t max_frames)
{
    if (offset < 0 || max_frames < 1) {
        PyErr_SetString(PyExc_ValueError, "offset must be >= 0 and max_frames >= 1");
        return NULL;
    }
    Py_ssize_t end = size;
    if (end_obj != Py_None) {
        end = PyLong_AsSsize_t(end_obj);
        if (end == -1 && PyErr_Occurred())
            return NULL;
        if (end < 0 || end > size) {
            PyErr_SetString(PyExc_ValueError, "end must be within the buffer");
            return NULL;
        }
    }
    if (max_frames > UINT32_MAX / MSGR_SCAN_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "max_frames is too large");
        return NULL;
    }
    uint64_t stack[SCAN_STACK_FRAMES * MSGR_SCAN_SLOTS];
    uint64_t *recs = stack;
    if (max_frames > SCAN_STACK_FRAMES) {
        recs = PyMem_Malloc((size_t)max_frames * MSGR_SCAN_SLOTS * sizeof(uint64_t));
        if (recs == NULL)
            return PyErr_NoMemory();
    }
    uint64_t res[4] = {0, 0, 0, 0};
    /* an offset past the end scans nothing, as the Python scanner */
    int status = offset >= end ? MSGR_SCAN_NEED_MORE
        : msgr_scan_frames(p, (size_t)end, (size_t)offset, flags, max_inline, recs, (uint32_t)max_frames, res);
    if (offset >= end)
        res[0] = (uint64_t)offset;
    PyObject *list = records(recs, res[1]);
    if (recs != stack)
        PyMem_Free(recs);
    if (list == NULL)
        return NULL;
    PyObject *out = PyTuple_New(5);
    if (out == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 2, list);
    PyObject *v[4] = {PyLong_FromLong(status), PyLong_FromUnsignedLongLong(res[0]),
                      PyLong_FromUnsignedLongLong(res[2]), PyLong_FromUnsignedLongLong(res[3])};
    const int at[4] = {0, 1, 3, 4};
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        if (v[k] == NULL)
            bad = 1;
        else
            PyTuple_SET_ITEM(out, at[k], v[k]);
    }
    if (bad) {
        Py_DECREF(out);   /* the slots not set are NULL: tuple dealloc skips them */
        return NULL;
    }
    return out;
}

/* scan(buf, offset, end, flags, max_inline, max_frames) -> (status, end, records, messages, bytes):
 * _cwire.scan's contract (records: tuples of MSGR_SCAN_SLOTS ints, csrc/fastpath.c);
 * scan_pinned(buf, offset, end, flags, max_inline): the same with max_frames 64 (the receive
 * path's form; the buffer is the bytearray itself, _cwire.pin). */
static PyObject *scan_args(PyObject *const *args, Py_ssize_t max_frames_default)
{
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    unsigned long flags = PyLong_AsUnsignedLong(args[3]);
    if (flags == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    unsigned long long max_inline = PyLong_AsUnsignedLongLong(args[4]);
    if (max_inline == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t max_frames = max_frames_default;
    if (max_frames == 0 && (max_frames = PyLong_AsSsize_t(args[5])) == -1 && PyErr_Occurred())
        return NULL;
    PyObject *b = args[0];
    if (PyByteArray_CheckExact(b))
        return scan_buffer(PyByteArray_AS_STRING(b), PyByteArray_GET_SIZE(b), offset, args[2],
                           (uint32_t)flags, max_inline, max_frames);
    if (PyBytes_CheckExact(b))
        return scan_buffer(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), offset, args[2], (uint32_t)flags,
                           max_inline, max_frames);
    Py_buffer view;
    if (PyObject_GetBuffer(b, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = scan_buffer(view.buf, view.len, offset, args[2], (uint32_t)flags, max_inline, max_frames);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "scan(buf, offset, end, flags, max_inline, max_frames)");
        return NULL;
    }
    return scan_args(args, 0);
}

static PyObject *scan_pinned(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "scan_pinned(buf, offset, end, flags, max_inline)");
        return NULL;
    }
    return scan_args(args, SCAN_STACK_FRAMES);
}

/* ---- Message.__init__ ---- */

static PyObject *pure_init;   /* the Python Message.__init__, for a class this one does not serve */

/* A class attribute as self.NAME reads it on a fresh instance (a descriptor: through getattr). */
static PyObject *class_attr(PyObject *self, PyObject *name)
{
    PyObject *v = _PyType_Lookup(Py_TYPE(self), name);
    if (v != NULL && Py_TYPE(v)->tp_descr_get == NULL)
        return Py_NewRef(v);
    return PyObject_GetAttr(self, name);
}

/* Message.__init__: the header (seq 0, the class's TYPE, HEAD_VERSION and COMPAT_VERSION, src_num
 * -1) and empty segments, as msgr/message.py's __init__ sets them. */
static PyObject *message_init(PyObject *self, PyObject *unused)
{
    (void)unused;
    const ClassInfo *ci = class_info(Py_TYPE(self));
    if (!ci->direct)
        return PyObject_CallOneArg(pure_init, self);
    PyObject *type = class_attr(self, str_TYPE);
    PyObject *version = type ? class_attr(self, str_HEAD_VERSION) : NULL;
    PyObject *compat = version ? class_attr(self, str_COMPAT_VERSION) : NULL;
    PyObject *h = compat ? header_type->tp_alloc(header_type, 0) : NULL;
    if (h == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(version);
        Py_XDECREF(compat);
        return NULL;
    }
    for (int i = 0; i < N_HDR_SLOTS; i++)
        SLOT(h, hdr_off[i]) = Py_NewRef(int_zero);   /* a new object: no old values */
    slot_put(h, hdr_off[H_TYPE], type);
    slot_put(h, hdr_off[H_VERSION], version);
    slot_put(h, hdr_off[H_SRC_NUM], int_minus_one);
    slot_put(h, hdr_off[H_COMPAT], compat);
    Py_DECREF(type);
    Py_DECREF(version);
    Py_DECREF(compat);
    slot_put(self, msg_off[S_HEADER], h);
    Py_DECREF(h);
    slot_put(self, msg_off[S_FOOTER], Py_None);
    slot_put(self, msg_off[S_FRONT], empty_bytes);
    slot_put(self, msg_off[S_MIDDLE], empty_bytes);
    slot_put(self, msg_off[S_DATA], empty_bytes);
    slot_put(self, msg_off[S_CONNECTION], Py_None);
    slot_put(self, msg_off[S_THROTTLED], Py_None);
    slot_put(self, msg_off[S_ENCODED], Py_None);
    slot_put(self, msg_off[S_RECV_STAMP], int_zero);
    Py_RETURN_NONE;
}

/* Message.get_connection (its _connection slot) and the header getters, as C methods: called once
 * per received message by most dispatchers (a reply goes through the connection). */
static PyObject *msg_slot_or_attr(PyObject *self, int slot)
{
    PyObject *v = class_info(Py_TYPE(self))->direct ? SLOT(self, msg_off[slot]) : NULL;
    if (v == NULL)   /* not a class served in place, or unset: what the attribute read does */
        return PyObject_GetAttr(self, msg_slot_str[slot]);
    return Py_NewRef(v);
}

static PyObject *message_get_connection(PyObject *self, PyObject *unused)
{
    (void)unused;
    return msg_slot_or_attr(self, S_CONNECTION);
}

static PyObject *header_field(PyObject *self, int field, PyObject *name)
{
    PyObject *h = msg_slot_or_attr(self, S_HEADER);
    if (h == NULL)
        return NULL;
    PyObject *v = Py_TYPE(h) == header_type ? SLOT(h, hdr_off[field]) : NULL;
    v = v != NULL ? Py_NewRef(v) : PyObject_GetAttr(h, name);
    Py_DECREF(h);
    return v;
}

static PyObject *str_type, *str_seq, *str_priority;

static PyObject *message_get_type(PyObject *self, PyObject *unused)
{
    (void)unused;
    return header_field(self, H_TYPE, str_type);
}

static PyObject *message_get_seq(PyObject *self, PyObject *unused)
{
    (void)unused;
    return header_field(self, H_SEQ, str_seq);
}

static PyObject *message_get_priority(PyObject *self, PyObject *unused)
{
    (void)unused;
    return header_field(self, H_PRIORITY, str_priority);
}

/* name, C function; the docstring is the Python method's (bind copies it) */
static PyMethodDef getter_defs[] = {
    {"get_connection", message_get_connection, METH_NOARGS, NULL},
    {"get_type", message_get_type, METH_NOARGS, NULL},
    {"get_seq", message_get_seq, METH_NOARGS, NULL},
    {"get_priority", message_get_priority, METH_NOARGS, NULL},
};

static PyMethodDef message_init_def = {
    "__init__", message_init, METH_NOARGS,
    "A new message: header fields from the class (TYPE, HEAD_VERSION, COMPAT_VERSION), empty "
    "segments (msgr._hotcall: msgr/message.py's Message.__init__, in C)."};

/* ---- giving back receive throttles ---- */

static PyObject *str_put, *py_release;   /* "put"; msgr.message's Python release_throttles */

/* throttle.put(count * k) for each (throttle, count) pair of `taken`; -1 with an exception set. */
static int put_run(PyObject *taken, Py_ssize_t k)
{
    PyObject *seq = PySequence_Fast(taken, "receive throttles must be (throttle, count) pairs");
    if (seq == NULL)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && rc == 0; i++) {
        PyObject *pair = PySequence_Fast(PySequence_Fast_GET_ITEM(seq, i), "a (throttle, count) pair");
        if (pair == NULL || PySequence_Fast_GET_SIZE(pair) != 2) {
            if (pair != NULL)
                PyErr_SetString(PyExc_ValueError, "a receive throttle entry is not a (throttle, count) pair");
            Py_XDECREF(pair);
            rc = -1;
            break;
        }
        PyObject *count = PySequence_Fast_GET_ITEM(pair, 1), *mult = NULL;
        if (k != 1) {
            PyObject *kk = PyLong_FromSsize_t(k);
            mult = kk ? PyNumber_Multiply(count, kk) : NULL;
            Py_XDECREF(kk);
            if (mult == NULL) {
                Py_DECREF(pair);
                rc = -1;
                break;
            }
        }
        PyObject *r = PyObject_CallMethodOneArg(PySequence_Fast_GET_ITEM(pair, 0), str_put, mult ? mult : count);
        Py_XDECREF(mult);
        Py_DECREF(pair);
        if (r == NULL)
            rc = -1;
        Py_XDECREF(r);
    }
    Py_DECREF(seq);
    return rc;
}

/* release_throttles(msgs): msgr.message.release_throttles (one put per throttle for each run of
 * messages holding the same pairs object), the messages' _throttled read and cleared in place.
 * A sequence with anything but plain Messages goes to the Python function whole. */
static PyObject *release_throttles(PyObject *self, PyObject *arg)
{
    (void)self;
    if (message_type == NULL || py_release == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "msgr._hotcall.bind_decode() was not called");
        return NULL;
    }
    if (!PyList_CheckExact(arg) && !PyTuple_CheckExact(arg))
        return PyObject_CallOneArg(py_release, arg);
    PyObject *seq = Py_NewRef(arg);   /* the list may change under Python code (put) */
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *m = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyObject_TypeCheck(m, message_type) || !class_info(Py_TYPE(m))->direct
            || SLOT(m, msg_off[S_THROTTLED]) == NULL) {
            Py_DECREF(seq);
            return PyObject_CallOneArg(py_release, arg);
        }
    }
    /* from here on the items are only read by index of our own reference's snapshot */
    PyObject *items = PySequence_List(seq);
    Py_DECREF(seq);
    if (items == NULL)
        return NULL;
    PyObject *last = NULL;   /* the run's pairs (a strong reference) */
    Py_ssize_t k = 0;
    int rc = 0;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        PyObject *m = PyList_GET_ITEM(items, i);
        PyObject *taken = SLOT(m, msg_off[S_THROTTLED]);
        if (taken == NULL)
            continue;
        int truthy = PyObject_IsTrue(taken);
        if (truthy < 0) {
            rc = -1;
            break;
        }
        if (!truthy)
            continue;
        Py_INCREF(taken);
        slot_put(m, msg_off[S_THROTTLED], Py_None);
        if (taken == last) {
            k++;
            Py_DECREF(taken);
            continue;
        }
        if (last != NULL)
            rc = put_run(last, k);
        Py_XSETREF(last, taken);
        k = 1;
    }
    if (last != NULL && rc == 0)
        rc = put_run(last, k);
    Py_XDECREF(last);
    Py_DECREF(items);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- bind ---- */

/* The offset of tp's __slots__ member `name` (a writable object slot); -1 with an exception set. */
static Py_ssize_t member_offset(PyTypeObject *tp, PyObject *name, PyObject **descr_out)
{
    PyObject *d = _PyType_Lookup(tp, name);
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%U is not a __slots__ member", tp->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset < (Py_ssize_t)sizeof(PyObject)) {
        PyErr_Format(PyExc_TypeError, "%s.%U is not a writable object slot", tp->tp_name, name);
        return -1;
    }
    if (descr_out != NULL)
        *descr_out = d;
    return m->offset;
}

/* bind(Message, MsgHeader, init, encode_payload, _encode) -> __init__
 * Resolves the slots once; returns the C __init__ for Message (a method descriptor of it). */
static PyObject *bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5 || !PyType_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "bind(Message, MsgHeader, __init__, encode_payload, _encode)");
        return NULL;
    }
    PyTypeObject *mt = (PyTypeObject *)args[0], *ht = (PyTypeObject *)args[1];
    for (int i = 0; i < N_MSG_SLOTS; i++) {
        if (msg_slot_str[i] == NULL && (msg_slot_str[i] = PyUnicode_InternFromString(msg_slot_names[i])) == NULL)
            return NULL;
        PyObject *d;
        if ((msg_off[i] = member_offset(mt, msg_slot_str[i], &d)) < 0)
            return NULL;
        Py_XSETREF(msg_descr[i], Py_NewRef(d));
    }
    for (int i = 0; i < N_HDR_SLOTS; i++) {
        PyObject *name = PyUnicode_InternFromString(hdr_slot_names[i]);
        if (name == NULL)
            return NULL;
        hdr_off[i] = member_offset(ht, name, NULL);
        Py_DECREF(name);
        if (hdr_off[i] < 0)
            return NULL;
    }
    if (ht->tp_itemsize != 0 || ht->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "the header class must have __slots__ only");
        return NULL;
    }
    Py_XSETREF(message_type, (PyTypeObject *)Py_NewRef(mt));
    Py_XSETREF(header_type, (PyTypeObject *)Py_NewRef(ht));
    Py_XSETREF(pure_init, Py_NewRef(args[2]));
    Py_XSETREF(encode_nothing, Py_NewRef(args[3]));
    Py_XSETREF(encode_method, Py_NewRef(args[4]));
    memset(class_cache, 0, sizeof class_cache);
    PyObject *d = PyDescr_NewMethod(mt, &message_init_def);
    if (d != NULL)
        Py_XSETREF(init_descr, Py_NewRef(d));
    return d;
}

/* getters(Message) -> {name: method descriptor}: Message.get_connection, get_type, get_seq,
 * get_priority in C (after bind), each with the docstring of the Python method it replaces. */
static PyObject *getters(PyObject *self, PyObject *mt)
{
    (void)self;
    if (!PyType_Check(mt) || (PyTypeObject *)mt != message_type) {
        PyErr_SetString(PyExc_TypeError, "getters(Message) after bind()");
        return NULL;
    }
    PyObject *out = PyDict_New();
    for (size_t i = 0; out != NULL && i < sizeof getter_defs / sizeof getter_defs[0]; i++) {
        PyObject *py = PyObject_GetAttrString(mt, getter_defs[i].ml_name);
        PyObject *doc = py ? PyObject_GetAttrString(py, "__doc__") : NULL;
        if (doc != NULL && getter_defs[i].ml_doc == NULL && PyUnicode_Check(doc))
            getter_defs[i].ml_doc = PyUnicode_AsUTF8(doc);   /* kept alive: a reference leaks on purpose */
        else
            Py_XDECREF(doc);
        Py_XDECREF(py);
        PyObject *d = doc ? PyDescr_NewMethod((PyTypeObject *)mt, &getter_defs[i]) : NULL;
        if (d == NULL || PyDict_SetItemString(out, getter_defs[i].ml_name, d) < 0)
            Py_CLEAR(out);
        Py_XDECREF(d);
    }
    return out;
}

/* bind_decode(registry, decode_payload, decode_message, release_throttles): what decode_record
 * and release_throttles need of msgr.message. */
static PyObject *bind_decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "bind_decode(registry: dict, decode_payload, decode_message, release_throttles)");
        return NULL;
    }
    Py_XSETREF(py_release, Py_NewRef(args[3]));
    Py_XSETREF(registry, Py_NewRef(args[0]));
    Py_XSETREF(decode_nothing, Py_NewRef(args[1]));
    Py_XSETREF(py_decode, Py_NewRef(args[2]));
    memset(class_cache, 0, sizeof class_cache);
    Py_RETURN_NONE;
}

/* decode_record(record, view, connection, recv_stamp_us) -> Message
 *
 * The received message a scan record describes (msgr.message.decode_record): its header from
 * the record's fields, its segments copied out of `view` (a memoryview of the receive buffer) at
 * the record's front offset, the record as its footer.  A class with nothing to decode (and
 * Message's __new__/__init__) gets its slots set here; any other goes through the Python
 * decode_message with the header and segments made here (its compat check, decode_payload and
 * the errors they raise). */
static PyObject *decode_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4 || !PyTuple_CheckExact(args[0]) || PyTuple_GET_SIZE(args[0]) != MSGR_SCAN_SLOTS
        || !PyMemoryView_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "decode_record(record: 24-tuple, view: memoryview, connection, stamp)");
        return NULL;
    }
    if (py_decode == NULL || message_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "msgr._hotcall.bind_decode() was not called");
        return NULL;
    }
    PyObject *r = args[0];
    const Py_buffer *view = PyMemoryView_GET_BUFFER(args[1]);
    if (((PyMemoryViewObject *)args[1])->flags & _Py_MEMORYVIEW_RELEASED || view->buf == NULL
        || !PyBuffer_IsContiguous(view, 'C') || view->itemsize != 1) {
        PyErr_SetString(PyExc_ValueError, "view must be a live contiguous byte view");
        return NULL;
    }
    Py_ssize_t off[4];   /* front offset, front/middle/data lengths */
    const int where[4] = {22, 8, 9, 10};
    for (int k = 0; k < 4; k++) {
        off[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(r, where[k]));
        if (off[k] == -1 && PyErr_Occurred())
            return NULL;
        if (off[k] < 0) {
            PyErr_SetString(PyExc_ValueError, "a record field is negative");
            return NULL;
        }
    }
    if (off[1] > view->len || off[2] > view->len || off[3] > view->len
        || off[0] > view->len - off[1] - off[2] - off[3]) {
        PyErr_SetString(PyExc_ValueError, "the record's segments are outside the view");
        return NULL;
    }
    PyObject *seg[3] = {NULL, NULL, NULL}, *hdr = NULL, *msg = NULL;
    const char *p = (const char *)view->buf + off[0];
    for (int k = 0; k < 3; k++) {
        seg[k] = off[1 + k] ? PyBytes_FromStringAndSize(p, off[1 + k]) : Py_NewRef(empty_bytes);
        if (seg[k] == NULL)
            goto done;
        p += off[1 + k];
    }
    hdr = header_type->tp_alloc(header_type, 0);
    if (hdr == NULL)
        goto done;
    for (int i = 0; i < N_HDR_SLOTS; i++)
        SLOT(hdr, hdr_off[i]) = Py_NewRef(PyTuple_GET_ITEM(r, 3 + i));   /* a new object: no old values */
    PyObject *cls = PyDict_GetItemWithError(registry, PyTuple_GET_ITEM(r, 5));   /* header.type */
    if (cls == NULL) {
        if (PyErr_Occurred())
            goto done;
        cls = (PyObject *)message_type;
    }
    const ClassInfo *ci = PyType_Check(cls) && PyType_IsSubtype((PyTypeObject *)cls, message_type)
        ? class_info((PyTypeObject *)cls) : NULL;
    if (ci == NULL || !ci->plain_build) {
        PyObject *call[7] = {hdr, seg[0], seg[1], seg[2], r, args[2], args[3]};
        msg = PyObject_Vectorcall(py_decode, call, 7, NULL);
        goto done;
    }
    if (cls != (PyObject *)message_type) {
        /* the compat rule: our HEAD_VERSION (when set) must not be older than the sender's compat */
        PyObject *hv = PyObject_GetAttr(cls, str_HEAD_VERSION);
        if (hv == NULL)
            goto done;
        int newer = PyObject_IsTrue(hv);
        if (newer > 0)
            newer = PyObject_RichCompareBool(hv, PyTuple_GET_ITEM(r, 3 + H_COMPAT), Py_LT);
        Py_DECREF(hv);
        if (newer < 0)
            goto done;
        if (newer) {   /* the Python decode_message raises the DecodeError */
            PyObject *call[7] = {hdr, seg[0], seg[1], seg[2], r, args[2], args[3]};
            msg = PyObject_Vectorcall(py_decode, call, 7, NULL);
            goto done;
        }
    }
    msg = ((PyTypeObject *)cls)->tp_new((PyTypeObject *)cls, empty_tuple, NULL);
    if (msg == NULL)
        goto done;
    slot_put(msg, msg_off[S_THROTTLED], Py_None);
    slot_put(msg, msg_off[S_ENCODED], Py_None);
    slot_put(msg, msg_off[S_HEADER], hdr);
    slot_put(msg, msg_off[S_CONNECTION], args[2]);
    slot_put(msg, msg_off[S_RECV_STAMP], args[3]);
    slot_put(msg, msg_off[S_FRONT], seg[0]);
    slot_put(msg, msg_off[S_MIDDLE], seg[1]);
    slot_put(msg, msg_off[S_DATA], seg[2]);
    slot_put(msg, msg_off[S_FOOTER], r);
done:
    Py_XDECREF(hdr);
    for (int k = 0; k < 3; k++)
        Py_XDECREF(seg[k]);
    return msg;
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(Message, MsgHeader, __init__, encode_payload, _encode) -> __init__"},
    {"frame_burst", (PyCFunction)(void (*)(void))frame_burst, METH_FASTCALL,
     "frame_burst(conf, msgs, start, seq, out) -> (n, buf, error): a run of small messages, one bytearray"},
    {"frame_one", (PyCFunction)(void (*)(void))frame_one, METH_FASTCALL,
     "frame_one(conf, msg, seq, ack) -> bytes | exception | None: a lone small message and the ACK"},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(buf, offset, end, flags, max_inline, max_frames) -> (status, end, records, messages, bytes)"},
    {"bind_decode", (PyCFunction)(void (*)(void))bind_decode, METH_FASTCALL,
     "bind_decode(registry, decode_payload, decode_message, release_throttles)"},
    {"getters", getters, METH_O, "getters(Message) -> {name: C method}: the slot getters of Message"},
    {"release_throttles", release_throttles, METH_O,
     "release_throttles(msgs): msgr.message.release_throttles with the slots read in place"},
    {"decode_record", (PyCFunction)(void (*)(void))decode_record, METH_FASTCALL,
     "decode_record(record, view, connection, recv_stamp_us) -> Message: a received message from its scan record"},
    {"scan_pinned", (PyCFunction)(void (*)(void))scan_pinned, METH_FASTCALL,
     "scan_pinned(buf, offset, end, flags, max_inline): scan with max_frames 64"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "msgr._hotcall",
    "pymsgr's CPython C-API fast path (csrc/hotcall.c): framing and scanning on Python objects.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hotcall(void)
{
    str_TYPE = PyUnicode_InternFromString("TYPE");
    str_HEAD_VERSION = PyUnicode_InternFromString("HEAD_VERSION");
    str_COMPAT_VERSION = PyUnicode_InternFromString("COMPAT_VERSION");
    str_encode_payload = PyUnicode_InternFromString("encode_payload");
    str__encode = PyUnicode_InternFromString("_encode");
    str___init__ = PyUnicode_InternFromString("__init__");
    str_decode_payload = PyUnicode_InternFromString("decode_payload");
    str_put = PyUnicode_InternFromString("put");
    str_type = PyUnicode_InternFromString("type");
    str_seq = PyUnicode_InternFromString("seq");
    str_priority = PyUnicode_InternFromString("priority");
    int_zero = PyLong_FromLong(0);
    int_minus_one = PyLong_FromLong(-1);
    empty_bytes = PyBytes_FromStringAndSize("", 0);
    empty_tuple = PyTuple_New(0);
    if (!str_TYPE || !str_HEAD_VERSION || !str_COMPAT_VERSION || !str_encode_payload || !str__encode
        || !str___init__ || !str_decode_payload || !str_put || !str_type || !str_seq || !str_priority || !int_zero || !int_minus_one || !empty_bytes || !empty_tuple)
        return NULL;
    for (int i = 0; i < SMALL_INTS; i++)
        if ((small_ints[i] = PyLong_FromLong(i)) == NULL)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "SCAN_SLOTS", MSGR_SCAN_SLOTS) < 0
        || PyModule_AddIntConstant(m, "SCAN_PINNED_FRAMES", SCAN_STACK_FRAMES) < 0
        || PyModule_AddIntConstant(m, "FRAME_FIELDS", MSGR_FRAME_FIELDS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
