//! `#[derive(Json)]`: a wire type's browser codec (`protocol::json`'s `FromJson` and `ToJson`),
//! generated from the same `#[serde(...)]` attributes that give it its server form, so the two
//! cannot be spelled apart.
//!
//! It reads exactly the serde attributes Tether uses, and refuses any other one with a compile
//! error (an attribute it ignored would make the forms disagree):
//!
//! - structs with named fields; on a field `rename = "…"`, `default`, `skip_serializing_if =
//!   "path"` and `with = "module"` (the module also has `read_json` and `write_json`, e.g.
//!   `protocol::field::lenient`);
//! - externally tagged enums (serde's default) of unit, newtype and struct variants; on the enum
//!   `rename_all = "snake_case" | "camelCase"`, on a variant `rename = "…"`.
//!
//! What it reads, as serde reads it: unknown fields are skipped; a missing field is its default
//! with `default`, `None` for an `Option` (without `with`), otherwise an error; a unit variant
//! is `"name"` or `{"name": null}`, any other `{"name": body}` with exactly one key. Where the
//! codec is deliberately narrower than serde (a struct is an object, never an array of its
//! fields; a repeated field keeps its last value instead of being an error) no Tether peer
//! writes the wider form.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{
    parse_macro_input, parse_quote, Attribute, Data, DeriveInput, Fields, Ident, LitStr, Path, Type,
};

#[proc_macro_derive(Json, attributes(serde))]
pub fn derive_json(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// One field as both forms see it.
struct Field<'a> {
    member: &'a Ident,
    ty: &'a Type,
    /// The JSON key.
    name: String,
    default: bool,
    skip_if: Option<Path>,
    with: Option<Path>,
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let (read, write) = match &input.data {
        Data::Struct(data) => {
            container_attrs(&input.attrs, false)?;
            let fields = named_fields(&data.fields, input.ident.span())?;
            let read = read_fields(quote!(Self), &fields);
            let read = quote!(::core::result::Result::Ok(#read));
            let write = write_fields(&fields, |f| {
                let member = f.member;
                quote!(&self.#member)
            });
            (read, write)
        }
        Data::Enum(data) => {
            let rule = container_attrs(&input.attrs, true)?;
            if data.variants.is_empty() {
                return Err(syn::Error::new(
                    input.ident.span(),
                    "derive(Json) needs at least one variant",
                ));
            }
            let mut read_arms = Vec::new();
            let mut write_arms = Vec::new();
            for variant in &data.variants {
                let ident = &variant.ident;
                let name = variant_name(&variant.attrs, ident, rule)?;
                match &variant.fields {
                    Fields::Unit => {
                        read_arms.push(quote! {
                            #name => {
                                ::protocol::json::unit_variant(__body)?;
                                Self::#ident
                            }
                        });
                        let text = json_string(&name);
                        write_arms.push(quote!(Self::#ident => __out.push_str(#text),));
                    }
                    Fields::Unnamed(unnamed) if unnamed.unnamed.len() == 1 => {
                        let ty = &unnamed.unnamed[0].ty;
                        for attr in &unnamed.unnamed[0].attrs {
                            if attr.path().is_ident("serde") {
                                return Err(syn::Error::new(
                                    attr.span(),
                                    "derive(Json) reads no serde attributes on a newtype variant's field",
                                ));
                            }
                        }
                        read_arms.push(quote! {
                            #name => {
                                let __r = ::protocol::json::variant_body(__body)?;
                                Self::#ident(<#ty as ::protocol::json::FromJson>::read_json(__r)?)
                            }
                        });
                        let open = format!("{{{}:", json_string(&name));
                        write_arms.push(quote! {
                            Self::#ident(__value) => {
                                __out.push_str(#open);
                                ::protocol::json::ToJson::write_json(__value, __out);
                                __out.push('}');
                            }
                        });
                    }
                    Fields::Named(_) => {
                        let fields = named_fields(&variant.fields, ident.span())?;
                        let read = read_fields(quote!(Self::#ident), &fields);
                        read_arms.push(quote! {
                            #name => {
                                let __r = ::protocol::json::variant_body(__body)?;
                                #read
                            }
                        });
                        let members: Vec<&Ident> = fields.iter().map(|f| f.member).collect();
                        let write = write_fields(&fields, |f| {
                            let member = f.member;
                            quote!(#member)
                        });
                        let open = format!("{{{}:", json_string(&name));
                        write_arms.push(quote! {
                            Self::#ident { #(#members),* } => {
                                __out.push_str(#open);
                                #write
                                __out.push('}');
                            }
                        });
                    }
                    Fields::Unnamed(unnamed) => {
                        return Err(syn::Error::new(
                            unnamed.span(),
                            "derive(Json) supports unit, newtype and struct variants",
                        ))
                    }
                }
            }
            let read = quote! {
                ::protocol::json::read_variant(__r, &mut |__variant, __body| {
                    ::core::result::Result::Ok(::core::option::Option::Some(match __variant {
                        #(#read_arms)*
                        _ => return ::core::result::Result::Ok(::core::option::Option::None),
                    }))
                })
            };
            let write = quote! {
                match self {
                    #(#write_arms)*
                }
            };
            (read, write)
        }
        Data::Union(_) => {
            return Err(syn::Error::new(
                input.ident.span(),
                "derive(Json) supports structs and enums",
            ))
        }
    };

    let ident = &input.ident;
    let bounded = |bound: Path| {
        let mut generics = input.generics.clone();
        for param in generics.type_params_mut() {
            param.bounds.push(parse_quote!(#bound));
        }
        generics
    };
    let from = bounded(parse_quote!(::protocol::json::FromJson));
    let to = bounded(parse_quote!(::protocol::json::ToJson));
    let (from_impl, ty_generics, from_where) = from.split_for_impl();
    let (to_impl, _, to_where) = to.split_for_impl();
    Ok(quote! {
        impl #from_impl ::protocol::json::FromJson for #ident #ty_generics #from_where {
            fn read_json(
                __r: &mut ::protocol::json::Reader<'_>,
            ) -> ::protocol::json::Result<Self> {
                #read
            }
        }

        impl #to_impl ::protocol::json::ToJson for #ident #ty_generics #to_where {
            fn write_json(&self, __out: &mut ::std::string::String) {
                #write
            }
        }
    })
}

/// A block that reads an object's fields from `__r` and builds `ctor { … }` from them.
fn read_fields(ctor: TokenStream, fields: &[Field]) -> TokenStream {
    let slots: Vec<Ident> = (0..fields.len())
        .map(|i| format_ident!("__f{}", i))
        .collect();
    let declare = fields.iter().zip(&slots).map(|(f, slot)| {
        let ty = f.ty;
        quote!(let mut #slot: ::core::option::Option<#ty> = ::core::option::Option::None;)
    });
    let arms = fields.iter().zip(&slots).map(|(f, slot)| {
        let (name, ty) = (&f.name, f.ty);
        let read = match &f.with {
            Some(module) => quote!(#module::read_json(__r)?),
            None => quote!(<#ty as ::protocol::json::FromJson>::read_json(__r)?),
        };
        quote!(#name => #slot = ::core::option::Option::Some(#read),)
    });
    let build = fields.iter().zip(&slots).map(|(f, slot)| {
        let (member, name) = (f.member, &f.name);
        // As serde: a missing field is an error unless it has a default or is an `Option`
        // read by its own `Deserialize` (a `with` module's is not).
        if f.default || (f.with.is_none() && is_option(f.ty)) {
            quote!(#member: #slot.unwrap_or_default())
        } else {
            quote!(#member: ::protocol::json::required(#slot, #name)?)
        }
    });
    quote! {{
        #(#declare)*
        ::protocol::json::read_fields(__r, &mut |__name, __r| {
            match __name {
                #(#arms)*
                _ => return ::core::result::Result::Ok(false),
            }
            ::core::result::Result::Ok(true)
        })?;
        #ctor { #(#build),* }
    }}
}

/// Statements that write the fields as an object to `__out`; `value` is each field's `&T`.
fn write_fields(fields: &[Field], value: impl Fn(&Field) -> TokenStream) -> TokenStream {
    let writes = fields.iter().map(|f| {
        let name = &f.name;
        let value = value(f);
        let write = match &f.with {
            Some(module) => quote!(#module::write_json(#value, __o.key(#name));),
            None => quote!(__o.field(#name, #value);),
        };
        match &f.skip_if {
            Some(skip) => quote!(if !#skip(#value) { #write }),
            None => write,
        }
    });
    quote! {
        ::protocol::json::write_object(__out, |__o| {
            #(#writes)*
        });
    }
}

fn named_fields(fields: &Fields, span: proc_macro2::Span) -> syn::Result<Vec<Field<'_>>> {
    let Fields::Named(named) = fields else {
        return Err(syn::Error::new(
            span,
            "derive(Json) supports structs with named fields",
        ));
    };
    named.named.iter().map(field).collect()
}

fn field(f: &syn::Field) -> syn::Result<Field<'_>> {
    let member = f.ident.as_ref().expect("named field");
    let mut field = Field {
        member,
        ty: &f.ty,
        name: member.to_string(),
        default: false,
        skip_if: None,
        with: None,
    };
    serde_attrs(&f.attrs, |meta| {
        if meta.path.is_ident("rename") {
            field.name = meta.value()?.parse::<LitStr>()?.value();
        } else if meta.path.is_ident("default") {
            if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                return Err(meta.error("derive(Json) supports `default` without a path"));
            }
            field.default = true;
        } else if meta.path.is_ident("skip_serializing_if") {
            field.skip_if = Some(meta.value()?.parse::<LitStr>()?.parse()?);
        } else if meta.path.is_ident("with") {
            field.with = Some(meta.value()?.parse::<LitStr>()?.parse()?);
        } else {
            return Err(unsupported(&meta));
        }
        Ok(())
    })?;
    Ok(field)
}

#[derive(Clone, Copy)]
enum RenameRule {
    None,
    SnakeCase,
    CamelCase,
}

/// The container's attributes: only an enum's `rename_all`.
fn container_attrs(attrs: &[Attribute], is_enum: bool) -> syn::Result<RenameRule> {
    let mut rule = RenameRule::None;
    serde_attrs(attrs, |meta| {
        if is_enum && meta.path.is_ident("rename_all") {
            let value = meta.value()?.parse::<LitStr>()?;
            rule = match value.value().as_str() {
                "snake_case" => RenameRule::SnakeCase,
                "camelCase" => RenameRule::CamelCase,
                _ => {
                    return Err(syn::Error::new(
                        value.span(),
                        "derive(Json) supports rename_all = \"snake_case\" or \"camelCase\"",
                    ))
                }
            };
            Ok(())
        } else {
            Err(unsupported(&meta))
        }
    })?;
    Ok(rule)
}

/// A variant's name on the wire, as serde renames it.
fn variant_name(attrs: &[Attribute], ident: &Ident, rule: RenameRule) -> syn::Result<String> {
    let ident = ident.to_string();
    let mut name = match rule {
        RenameRule::None => ident.clone(),
        RenameRule::SnakeCase => {
            let mut snake = String::new();
            for (i, ch) in ident.char_indices() {
                if i > 0 && ch.is_uppercase() {
                    snake.push('_');
                }
                snake.push(ch.to_ascii_lowercase());
            }
            snake
        }
        RenameRule::CamelCase => ident[..1].to_ascii_lowercase() + &ident[1..],
    };
    serde_attrs(attrs, |meta| {
        if meta.path.is_ident("rename") {
            name = meta.value()?.parse::<LitStr>()?.value();
            Ok(())
        } else {
            Err(unsupported(&meta))
        }
    })?;
    Ok(name)
}

fn serde_attrs(
    attrs: &[Attribute],
    mut each: impl FnMut(syn::meta::ParseNestedMeta) -> syn::Result<()>,
) -> syn::Result<()> {
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(&mut each)?;
    }
    Ok(())
}

fn unsupported(meta: &syn::meta::ParseNestedMeta) -> syn::Error {
    meta.error(
        "derive(Json) does not read this serde attribute here, so the browser codec would \
         disagree with serde: support it in protocol/derive, or spell the type without it",
    )
}

/// `Option<…>` as written.
fn is_option(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none()
        && path.path.segments.last().is_some_and(|s| s.ident == "Option"))
}

/// `name` as a JSON string, escaped as `protocol::json::write_str` escapes it.
fn json_string(name: &str) -> String {
    let mut out = String::from("\"");
    for ch in name.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
